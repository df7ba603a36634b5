"""Class-activation heat maps through pytorch-grad-cam, on the same preprocessed images the model classifies.

:class:`HeatMapper` wraps one CAM method and one target layer; use it in a ``with`` block so its hooks are
removed afterwards. Shapes: (N, S, S) uint8 preprocessed images -> (N, S, S) float32 maps in [0, 1];
:meth:`Preprocessor.to_original <rcdnet.data.preprocess.Preprocessor.to_original>` maps one (S, S) map back onto
the original (H, W) image.
"""

from __future__ import annotations

import numpy as np
import pytorch_grad_cam as pgc
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from rcdnet.explain.agreement import centre_prior
from rcdnet.models.members import MemberMean
from rcdnet.models.rcdnet import RcdNet


class CentrePrior(BaseCAM):
    """The reference every method must beat: a centred Gaussian 'heat map' that ignores the image and the model
    (lesions tend to sit in the middle of the frame). A method class like pytorch-grad-cam's own."""

    uses_model = False

    def __init__(self, model: nn.Module, target_layers: list[nn.Module], reshape_transform=None):
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)

    def forward(self, input_tensor: torch.Tensor, targets=None, eigen_smooth: bool = False) -> np.ndarray:
        """(N, 3, S, S) -> (N, S, S) float32 prior, the same for every image."""
        prior = centre_prior(tuple(input_tensor.shape[-2:])).astype(np.float32)
        return np.repeat(prior[None], len(input_tensor), axis=0)


REFERENCE = "centre-prior"
METHODS: dict[str, type] = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "scorecam": pgc.ScoreCAM,
    "eigencam": pgc.EigenCAM,
    "layercam": pgc.LayerCAM,
    REFERENCE: CentrePrior,
}


def default_layer(model: nn.Module) -> str:
    """The conventional Grad-CAM layer of a model, as a dotted module name.

    RcdNet: the CBAM output (the attended 7x7 map the classifier pools). EfficientNet / MobileNet: the last
    1x1 conv head's batch norm + activation. ViT: the last block's first norm (tokens, reshaped to a grid).
    Other timm CNNs (ResNet, ResNeXt, RegNet): the last stage from ``feature_info``. A member ensemble: that layer
    in every member, comma-separated (pytorch-grad-cam averages the layers' maps)."""
    if isinstance(model, MemberMean):
        return ",".join(f"members.{i}.{default_layer(m)}" for i, m in enumerate(model.members))
    if isinstance(model, RcdNet):
        return "cbam"
    if _is_vit(model):
        return f"blocks.{len(model.blocks) - 1}.norm1"
    if hasattr(model, "conv_head") and hasattr(model, "bn2"):
        return "bn2"
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        return last["module"]
    raise ValueError(f"no default Grad-CAM layer known for {type(model).__name__}; pass --layer")


def _is_vit(model: nn.Module) -> bool:
    return hasattr(model, "patch_embed") and hasattr(model, "blocks")


def _vit_reshape(model: nn.Module):
    """(B, prefix + h*w, C) tokens -> (B, C, h, w), dropping the class / register tokens."""
    prefix = getattr(model, "num_prefix_tokens", 1)
    h, w = model.patch_embed.grid_size

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, prefix:, :].reshape(t.size(0), h, w, t.size(2)).permute(0, 3, 1, 2)

    return reshape


class HeatMapper:
    """One CAM method on one layer of a trained model.

    ``target``: ``"malignant"`` (default) or any class name explains that class; ``"predicted"`` explains each
    image's arg-max class. ``normalise(images)`` must turn (N, S, S) uint8 into the model's input tensor."""

    def __init__(self, model: nn.Module, classes: list[str], normalise, method: str = "gradcam",
                 layer: str | None = None, target: str = "malignant"):
        if method not in METHODS:
            raise ValueError(f"unknown heat-map method {method!r}; choose one of {', '.join(METHODS)}")
        if target != "predicted" and target not in classes:
            raise ValueError(f"unknown target {target!r}; choose 'predicted' or a class: {', '.join(classes)}")
        self.layer = layer or default_layer(model)
        try:
            modules = [model.get_submodule(name) for name in self.layer.split(",")]
        except AttributeError:
            raise ValueError(f"model has no layer {self.layer!r} (dotted module names, comma-separated, e.g. "
                             f"{default_layer(model)!r})") from None
        self.model, self.classes, self.normalise, self.method, self.target = model, classes, normalise, method, target
        reshape = _vit_reshape(model) if _is_vit(model) else None
        self.cam = METHODS[method](model=model, target_layers=modules, reshape_transform=reshape)
        if not getattr(self.cam, "uses_model", True):
            self.layer = "-"
        self.cam.batch_size = 32  # Score-CAM: masked images per forward pass

    def __enter__(self) -> HeatMapper:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the forward hooks from the model (idempotent)."""
        self.cam.activations_and_grads.release()

    def targets(self, n: int) -> list | None:
        if self.target == "predicted":
            return None
        return [ClassifierOutputTarget(self.classes.index(self.target))] * n

    def __call__(self, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """(N, S, S) uint8 -> (N, S, S) float32 heat maps, each scaled to [0, 1]."""
        out = []
        for i in range(0, len(images), batch_size):
            x = self.normalise(images[i:i + batch_size])
            maps = self.cam(input_tensor=x, targets=self.targets(len(x)))
            self.cam.activations_and_grads.clear()
            out.append(np.nan_to_num(maps.astype(np.float32)))
        s = images.shape[-1]
        return np.concatenate(out) if out else np.zeros((0, s, s), np.float32)
