"""Model registry: ``create_model(name)`` builds RcdNet or a timm baseline with a fresh classifier."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import timm
from torch import nn

from rcdnet.models.members import MemberMean
from rcdnet.models.pretrained import create_backbone
from rcdnet.models.rcdnet import RcdNet

if TYPE_CHECKING:
    from rcdnet.config import RunConfig

# name -> (timm backbone, RcdNet head?)
_MODELS: dict[str, tuple[str, bool]] = {
    "rcdnet": ("tf_efficientnet_lite0", True),
    "rcdnet_lite1": ("tf_efficientnet_lite1", True),
    "rcdnet_lite2": ("tf_efficientnet_lite2", True),
    "efficientnet_lite0": ("tf_efficientnet_lite0", False),
    "resnet50": ("resnet50", False),
    "mobilenetv2": ("mobilenetv2_100", False),
    "regnet": ("regnety_016", False),
    "vit": ("vit_small_patch16_224", False),
    "resnext50": ("resnext50_32x4d", False),
}


def list_models() -> list[str]:
    return sorted(_MODELS)


def resolve(name: str) -> tuple[str, bool]:
    """Registered name or ``timm:<name>`` -> (timm model name, RcdNet head?); an unknown name is a ValueError."""
    if name.startswith("timm:"):
        if name[5:] not in timm.list_models():
            raise ValueError(f"unknown timm model {name[5:]!r}")
        return name[5:], False
    if name in _MODELS:
        return _MODELS[name]
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())} or timm:<name>")


def is_vit(timm_name: str) -> bool:
    return timm_name.startswith(("vit_", "deit_", "deit3_"))


def create_model(name: str, num_classes: int = 2, pretrained: bool = True, weights: str | None = None,
                 image_size: int | None = None, **head: Any) -> nn.Module:
    """Build a registered model. ``head`` (RcdNet only): ``dsc_channels``, ``use_cbam``, ``drop_rate``, ``localise``.

    Any timm model name also works as a plain baseline (``timm:<name>``). ``image_size`` sizes a ViT's position
    embedding (convolutional models take any size)."""
    backbone_name, is_rcdnet = resolve(name)
    if image_size and is_vit(backbone_name):
        head = {**head, "img_size": image_size}
    if is_rcdnet:
        backbone = create_backbone(backbone_name, pretrained, weights, num_classes=0, global_pool="")
        return RcdNet(backbone, num_classes=num_classes, **head)
    extra = {k: v for k, v in head.items() if k == "img_size"}
    return create_backbone(backbone_name, pretrained, weights, num_classes=num_classes,
                           drop_rate=head.get("drop_rate", 0.3), **extra)


def build_model(cfg: RunConfig, num_classes: int, pretrained: bool, image_size: int | None = None,
                members: int | None = None) -> nn.Module:
    """The model a run configuration describes (``image_size`` overrides ``data.image_size``, e.g. to count FLOPs
    at 224 px): with ``members`` (default ``train.members``) above 1, that many copies as one :class:`MemberMean`."""
    members = cfg.train.members if members is None else members
    if members > 1:
        return MemberMean([build_model(cfg, num_classes, pretrained, image_size, members=1) for _ in range(members)])
    m = cfg.model
    localise = cfg.train.localise_weight > 0
    if localise and not m.name.startswith("rcdnet"):
        raise ValueError(f"train.localise_weight: only RcdNet models have a localisation head, not {m.name!r}")
    head = ({"dsc_channels": m.dsc_channels, "use_cbam": m.use_cbam, "drop_rate": m.drop_rate, "localise": localise}
            if m.name.startswith("rcdnet") else {"drop_rate": m.drop_rate})
    return create_model(m.name, num_classes=num_classes, pretrained=pretrained, weights=m.weights,
                        image_size=image_size or cfg.data.image_size, **head)


def input_stats(model: nn.Module) -> tuple[list[float], list[float]]:
    """(mean, std) per RGB channel of the model's input normalisation (its timm ``pretrained_cfg``; 0.5 if none)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return [float(v) for v in cfg.get("mean", (0.5,) * 3)], [float(v) for v in cfg.get("std", (0.5,) * 3)]


def freeze_stages(model: nn.Module, n_stages: int) -> list[nn.Module]:
    """Freeze the stem and the first ``n_stages`` stages of an EfficientNet(-based) model (no gradients).

    Returns the frozen modules; the trainer keeps them in eval mode so their batch-norm statistics stay
    ImageNet's (see :func:`train_mode`)."""
    if n_stages <= 0:
        return []
    net = model.backbone if isinstance(model, RcdNet) else model
    if not hasattr(net, "blocks") or not hasattr(net, "conv_stem"):
        raise ValueError(f"freeze_stages works on EfficientNet-style models; {type(net).__name__} has no stem/blocks")
    frozen = [net.conv_stem, net.bn1] + list(net.blocks[:n_stages])
    for m in frozen:
        m.requires_grad_(False)
    return frozen


def train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    """``model.train()`` with the frozen modules left in eval mode."""
    model.train()
    for m in frozen:
        m.eval()
