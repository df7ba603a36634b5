"""Overlay detection and removal: calipers, text and colour (Doppler, coloured marks) burnt into the image.

Overlays are a shortcut risk: if one class carries more marks, a model can learn the marks, which another
hospital will not draw the same way. :func:`detect_overlays` finds
- colour pixels (saturation in HSV), and
- thin bright marks (text, caliper crosses, dotted lines), seeded by pixels that either stand far above their
  9 x 9 neighbourhood (white top-hat >= 150 grey levels: on BUSI, text stands 165-200 above its background while
  99.99 % of tissue pixels stay under 145) or are saturated with a sharp edge (>= 235, 3 x 3 morphological
  gradient >= 100, top-hat >= 80: drawn marks on bright tissue; speckle is never that sharp), then grown by
  hysteresis (top-hat >= 60) and kept in connected components of text- or mark-like size and shape (longest
  side at most 8 % of the image width: characters and caliper crosses are small, skin and fascia lines long);
:func:`remove_overlays` fills them with OpenCV inpainting (Telea).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass
class Overlays:
    mask: np.ndarray      # (H, W) bool, every overlay pixel
    colour_pixels: int
    mark_pixels: int

    @property
    def has_colour(self) -> bool:
        return self.colour_pixels >= 30

    @property
    def has_marks(self) -> bool:
        return self.mark_pixels >= 25

    @property
    def any(self) -> bool:
        return self.has_colour or self.has_marks


def detect_overlays(rgb: np.ndarray, tophat: int = 150, min_component: int = 8, max_component: int = 3000) -> Overlays:
    """(H, W, 3) uint8 RGB -> overlay pixels. Thresholds are in grey levels; sizes in pixels at the image's
    own resolution."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"detect_overlays takes (H, W, 3) RGB images, got shape {rgb.shape}")
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    colour = (hsv[..., 1] > 70) & (hsv[..., 2] > 60)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    th = cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    grad = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    seeds = (th >= tophat) | ((gray >= 235) & (grad >= 100) & (th >= 80))
    grown = ((th >= 60) & (gray >= 150)) | seeds
    n, labels, stats, _ = cv2.connectedComponentsWithStats(grown.astype(np.uint8), connectivity=8)
    seeded = np.zeros(n, bool)
    seeded[np.unique(labels[seeds])] = True
    marks = np.zeros(gray.shape, bool)
    max_side = max(12, round(0.08 * gray.shape[1]))
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        fill = area / float(w * h)
        if (seeded[i] and min_component <= area <= max_component and max(w, h) <= max_side
                and (fill < 0.8 or min(w, h) <= 5)):
            marks[labels == i] = True
    mask = colour | marks
    return Overlays(mask=mask, colour_pixels=int(colour.sum()), mark_pixels=int(marks.sum()))


def remove_overlays(rgb: np.ndarray, overlays: Overlays | None = None) -> np.ndarray:
    """Inpaint overlay pixels (dilated by one pixel); returns a (H, W, 3) uint8 grayscale-valued image."""
    ov = overlays or detect_overlays(rgb)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if not ov.any:
        return np.repeat(gray[..., None], 3, axis=2)
    m = cv2.dilate(ov.mask.astype(np.uint8), np.ones((3, 3), np.uint8))
    out = cv2.inpaint(gray, m, 3, cv2.INPAINT_TELEA)
    return np.repeat(out[..., None], 3, axis=2)
