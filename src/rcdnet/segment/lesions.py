"""One found lesion and what a report states of it: outline, box, area, longest diameter and its perpendicular.

Lengths are in millimetres where the pixel size is known (``pixel_mm``: DICOM pixel spacing, BrEaST's
``Pixel_size``, a CSV column), else in pixels; ``units`` says which."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from rcdnet.data.boxes import Box, box_of_mask

Point = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Lesion:
    """A connected region of the segmenter's mask on the original image's pixels (x, y)."""

    box: Box
    confidence: float                 # mean lesion probability inside the region
    area_px: int
    outline: tuple[tuple[int, int], ...]  # the region's outer contour, simplified to 1 px
    long_axis: tuple[Point, Point]    # end points of the longest diameter
    short_axis: tuple[Point, Point]   # end points of the widest extent perpendicular to it
    pixel_mm: float | None = None

    @property
    def units(self) -> str:
        return "mm" if self.pixel_mm else "px"

    @property
    def long_diameter(self) -> float:
        return _length(self.long_axis) * (self.pixel_mm or 1.0)

    @property
    def short_diameter(self) -> float:
        return _length(self.short_axis) * (self.pixel_mm or 1.0)

    @property
    def area(self) -> float:
        return self.area_px * (self.pixel_mm or 1.0) ** 2

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) bool: the pixels inside the outline."""
        canvas = np.zeros(shape, np.uint8)
        cv2.fillPoly(canvas, [np.array(self.outline, np.int32)], 1)
        return canvas.astype(bool)

    def summary(self) -> dict:
        """Flat, rounded fields for a CSV row or a JSON answer."""
        u = self.units
        return {"box": list(self.box), "finder_confidence": round(self.confidence, 4),
                f"long_diameter_{u}": round(self.long_diameter, 2), f"short_diameter_{u}": round(self.short_diameter, 2),
                f"area_{u}2": round(self.area, 2)}


def _length(axis: tuple[Point, Point]) -> float:
    (x0, y0), (x1, y1) = axis
    return float(np.hypot(x1 - x0, y1 - y0))


def measure(region: np.ndarray, confidence: float, pixel_mm: float | None = None) -> Lesion:
    """The :class:`Lesion` of one (H, W) bool region. Diameters are measured on its convex hull, pixel edges
    included (a region of one pixel is 1 x 1): the longest is the greatest distance between two hull corners, the
    short one the hull's extent along the perpendicular to it."""
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)
    outline = tuple((int(x), int(y)) for x, y in cv2.approxPolyDP(contour, 1.0, True)[:, 0])
    # the hull of every pixel's corners is the hull of the corners of the outer boundaries' run ends (the pixels
    # between two ends of a straight run add none): a few dozen points instead of every pixel of the region
    xs, ys = np.concatenate([c[:, 0] for c in contours]).T
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)]).astype(np.float64)
    hull = cv2.convexHull(corners.astype(np.float32))[:, 0].astype(np.float64)
    d = np.linalg.norm(hull[:, None] - hull[None], axis=2)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    a, b = hull[i], hull[j]
    direction = (b - a) / max(d[i, j], 1e-9)
    normal = np.array([-direction[1], direction[0]])
    along, across = hull @ direction, hull @ normal
    mid = float(along[np.argmin(across)] + along[np.argmax(across)]) / 2  # where the widest extent is drawn
    lo, hi = float(across.min()), float(across.max())
    short = tuple(tuple(float(v) for v in mid * direction + c * normal) for c in (lo, hi))
    return Lesion(box=box_of_mask(region), confidence=float(confidence), area_px=int(region.sum()), outline=outline,
                  long_axis=(tuple(map(float, a)), tuple(map(float, b))), short_axis=short, pixel_mm=pixel_mm)


def regions(prob: np.ndarray, min_area: float, cut: float = 0.5) -> list[tuple[np.ndarray, float]]:
    """The connected regions of (H, W) ``prob`` at or above ``cut`` (else, for an image where no pixel reaches it,
    above half the map's maximum, so that there is always a best guess to report), each with its mean probability,
    most confident first; regions under ``min_area`` of the image are dropped."""
    peak = float(prob.max())
    level = cut if peak >= cut else peak / 2
    if peak <= 0:
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats((prob >= level).astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] < min_area * prob.size:
            continue
        region = labels == k
        out.append((region, float(prob[region].mean())))
    return sorted(out, key=lambda r: -r[1])
