"""How well a heat map agrees with a radiologist's lesion mask, and how faithful it is to the model.

All agreement functions take an (H, W) non-negative heat map and a boolean (H, W) mask of the same size.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget


def _check(heat: np.ndarray, mask: np.ndarray) -> None:
    if heat.shape != mask.shape:
        raise ValueError(f"heat map {heat.shape} and mask {mask.shape} differ in size")
    if not mask.any():
        raise ValueError("empty lesion mask")


def energy_in_mask(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heat map's total energy inside the mask (1 = all of it; a uniform map scores the mask's area
    fraction)."""
    _check(heat, mask)
    total = float(heat.sum())
    return float(heat[mask].sum()) / total if total > 0 else 0.0


def pointing_game(heat: np.ndarray, mask: np.ndarray, tolerance: int = 15) -> bool:
    """Is the heat map's maximum inside the mask grown by ``tolerance`` pixels (Zhang et al., 2018: 15 px)?"""
    _check(heat, mask)
    grown = mask
    if tolerance > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
        grown = cv2.dilate(mask.astype(np.uint8), k).astype(bool)
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return bool(grown[y, x])


def top_k_iou(heat: np.ndarray, mask: np.ndarray, k: float = 10.0) -> float:
    """IoU between the mask and the ``k`` % of pixels with the highest heat."""
    _check(heat, mask)
    n = max(1, int(round(heat.size * k / 100)))
    top = np.zeros(heat.size, bool)
    top[np.argpartition(heat.ravel(), -n)[-n:]] = True
    top = top.reshape(heat.shape)
    return float((top & mask).sum() / (top | mask).sum())


def centre_prior(shape: tuple[int, int], sigma: float = 0.25) -> np.ndarray:
    """A centred Gaussian 'heat map' (sigma as a fraction of each side): the reference any method must beat,
    since lesions tend to sit in the middle of the frame."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-(((yy - (h - 1) / 2) / (sigma * h)) ** 2 + ((xx - (w - 1) / 2) / (sigma * w)) ** 2) / 2)


def road_scores(model: torch.nn.Module, x: torch.Tensor, heat: np.ndarray, class_indices: list[int],
                fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ROAD (Rong et al., 2022) faithfulness on model inputs ``x`` (N, 3, S, S) with heat maps (N, S, S).

    ``class_indices``: the explained class of each image. Returns the change in its probability when the ``fraction`` most relevant pixels are
    imputed away (MoRF: the more negative, the more faithful) and when the ``fraction`` least relevant are
    (LeRF: near 0 is faithful). Imputation is pytorch-grad-cam's noisy linear imputer, seeded."""
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in class_indices]
    torch.manual_seed(seed)
    morf = ROADMostRelevantFirst(percentile=100 * (1 - fraction))(x, heat, targets, model)
    torch.manual_seed(seed)
    lerf = ROADLeastRelevantFirst(percentile=100 * fraction)(x, heat, targets, model)
    return np.asarray(morf, np.float64).ravel(), np.asarray(lerf, np.float64).ravel()
