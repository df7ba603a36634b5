"""Lesion boxes: the region a sonographer marks, and the square crop around it that the ROI mode classifies.

A box is ``(x0, y0, x1, y1)`` in the original image's pixels, half-open like a slice: columns ``x0 .. x1 - 1`` and
rows ``y0 .. y1 - 1``. It comes from the user (``predict --box``, box columns in a CSV) or from a lesion mask
(:func:`box_of_mask`); :func:`check_box` refuses one that cannot be a lesion in that image, naming the file.
"""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]


class BoxError(ValueError):
    """A box that is malformed or does not fit its image."""


def parse_box(text: str, where: str = "--box") -> Box:
    """``"x0,y0,x1,y1"`` (whole pixels) -> a box; anything else is a :class:`BoxError` naming ``where``."""
    try:
        x0, y0, x1, y1 = (int(p) for p in str(text).split(","))  # a wrong count or a non-integer: ValueError
    except ValueError:
        raise BoxError(f"{where}: a box is four whole pixel coordinates x0,y0,x1,y1; got {text!r}") from None
    return x0, y0, x1, y1


def check_box(box: Box, shape: tuple[int, int], where: str | None = None) -> Box:
    """``box`` if it is a non-empty region inside an image of ``shape`` (H, W); else a :class:`BoxError` that names
    ``where`` (the file; a caller that reports the file itself leaves it out) and says what is wrong."""
    x0, y0, x1, y1 = box
    h, w = shape[:2]
    at = f"{where}: " if where else ""
    if x1 < x0 or y1 < y0:
        raise BoxError(f"{at}box {box} has x1 < x0 or y1 < y0 (expected x0,y0,x1,y1 with x0 <= x1, y0 <= y1)")
    if x1 == x0 or y1 == y0:
        raise BoxError(f"{at}box {box} has zero size")
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise BoxError(f"{at}box {box} reaches outside the {w}x{h} image")
    return box


def box_of_mask(mask: np.ndarray) -> Box | None:
    """The tightest box around every True pixel of an (H, W) mask (several lesions: around all of them), or None
    for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def square_around(box: Box, margin: float) -> Box:
    """The square centred on ``box`` whose side is its longer side times (1 + ``margin``): the context a reader
    sees around the lesion. May reach outside the image (:func:`crop` pads with black)."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1.0 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    n = max(1, int(round(side)))
    return left, top, left + n, top + n


def crop(image: np.ndarray, region: Box) -> np.ndarray:
    """``image`` (H, W[, C]) cut to ``region``; the parts of the region outside the image are black."""
    x0, y0, x1, y1 = region
    h, w = image.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0, *image.shape[2:]), image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def jitter_box(box: Box, shape: tuple[int, int], rng: np.random.Generator, amount: float) -> Box:
    """A box moved and rescaled at random, as an imperfect hand-drawn box would be: its centre shifted by up to
    ``amount`` of its size in each direction and its size scaled by up to (1 + ``amount``) either way, kept inside
    the (H, W) image and at least 2 pixels wide and high."""
    x0, y0, x1, y1 = box
    h, w = shape[:2]
    bw, bh = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + rng.uniform(-amount, amount) * bw, (y0 + y1) / 2 + rng.uniform(-amount, amount) * bh
    f = float(np.exp(rng.uniform(-np.log1p(amount), np.log1p(amount))))
    nw, nh = max(2.0, bw * f), max(2.0, bh * f)
    nx0, ny0 = int(np.clip(round(cx - nw / 2), 0, w - 2)), int(np.clip(round(cy - nh / 2), 0, h - 2))
    return nx0, ny0, int(np.clip(round(cx + nw / 2), nx0 + 2, w)), int(np.clip(round(cy + nh / 2), ny0 + 2, h))


def paste(patch: np.ndarray, region: Box, shape: tuple[int, int]) -> np.ndarray:
    """The inverse of :func:`crop` for one channel: an (H, W) array, zero everywhere but where ``region`` (the
    patch's place in the image, possibly reaching past its edges) overlaps the image."""
    x0, y0, x1, y1 = region
    h, w = shape[:2]
    out = np.zeros((h, w), patch.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0:sy1, sx0:sx1] = patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
    return out
