"""The lesion localisation head's training: its loss, Mixup that mixes masks too, and its validation Dice."""

from __future__ import annotations

import numpy as np
import torch
from timm.data.mixup import mixup_target
from torch import nn
from torch.nn import functional as F

from rcdnet.models.input import Normalise, to_grey, to_unit


def mask_loss(logits: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Localisation loss: binary cross-entropy plus soft Dice between (B, 1, h, w) mask logits and the (B, 1, S, S)
    masks area-averaged to (h, w), over the items whose mask counts (zero, with the graph kept, if none does)."""
    target = F.adaptive_avg_pool2d(mask, logits.shape[-2:])
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=(1, 2, 3))
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum(dim=(1, 2, 3)) + 1) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    w = counts.float()
    return ((bce + dice) * w).sum() / w.sum().clamp(min=1)


def mix_batch(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor, aug, num_classes: int
              ) -> tuple[torch.Tensor, ...]:
    """timm's batch Mixup (each image with the batch reversed, lam ~ Beta(alpha, alpha), smoothed soft targets),
    applied to the masks too; a mixed mask counts only if both of its masks did."""
    lam = float(np.random.beta(aug.mixup_alpha, aug.mixup_alpha))
    target = mixup_target(y, num_classes, lam, aug.label_smoothing)
    return (x * lam + x.flip(0) * (1 - lam), target, mask * lam + mask.flip(0) * (1 - lam),
            counts & counts.flip(0))


@torch.inference_mode()
def mask_dice(model: nn.Module, normalise: Normalise, images: np.ndarray, masks: np.ndarray, has: np.ndarray,
              device: torch.device, batch: int = 32) -> float:
    """Mean Dice of ``model``'s lesion masks (probability >= 0.5, upsampled to the input size) against ``masks``
    (N, S, S) uint8 over the (N, S, S) ``images`` whose ``has`` is True; NaN if none is."""
    model.eval()
    dice = []
    for i in range(0, len(images), batch):
        x = normalise(to_unit(to_grey(images[i:i + batch]))).to(device)
        p = torch.sigmoid(F.interpolate(model.localise(x).float(), size=x.shape[-2:], mode="bilinear"))[:, 0]
        for a, b, h in zip(p.cpu().numpy() >= 0.5, masks[i:i + batch] >= 128, has[i:i + batch]):
            if h:
                dice.append(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
    return float(np.mean(dice)) if dice else float("nan")
