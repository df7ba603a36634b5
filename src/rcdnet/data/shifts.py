"""Realistic acquisition shifts for ultrasound images: what another hospital's scanner, preset or operator
changes. Used by the robustness suite (``rcdnet robustness``) and, optionally, as training augmentation.

Every shift takes a raw (H, W) uint8 grayscale image (before preprocessing), a strength level 1 (mild),
2 (moderate) or 3 (strong), and a NumPy generator (the only source of randomness, so a seed fixes the result),
and returns a uint8 image. Geometry-changing shifts may change (H, W).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

LEVELS = (1, 2, 3)


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255).astype(np.uint8)


def gain(img, level, rng):
    """Overall gain up: brighter image (x1.2, x1.4, x1.7)."""
    return _clip(img.astype(np.float32) * (1.0, 1.2, 1.4, 1.7)[level])


def gain_down(img, level, rng):
    """Overall gain down: darker image (x0.8, x0.65, x0.5)."""
    return _clip(img.astype(np.float32) * (1.0, 0.8, 0.65, 0.5)[level])


def contrast(img, level, rng):
    """Lower dynamic range / contrast around the mean (x0.8, x0.65, x0.5)."""
    f = img.astype(np.float32)
    m = f.mean()
    return _clip(m + (f - m) * (1.0, 0.8, 0.65, 0.5)[level])


def gamma(img, level, rng):
    """A different grey map: gamma 1.25, 1.5, 2.0 (darker mid-tones)."""
    g = (1.0, 1.25, 1.5, 2.0)[level]
    return _clip(255.0 * (img.astype(np.float32) / 255.0) ** g)


def tgc(img, level, rng):
    """Time-gain compensation: gain that changes with depth (rows), from -a/2 to +a/2 (a = 0.4, 0.8, 1.2),
    its direction drawn at random."""
    a = (0.0, 0.4, 0.8, 1.2)[level] * (1 if rng.random() < 0.5 else -1)
    ramp = 1 + a * (np.linspace(0, 1, img.shape[0], dtype=np.float32) - 0.5)
    return _clip(img.astype(np.float32) * ramp[:, None])


def speckle(img, level, rng):
    """Multiplicative speckle noise (gamma-distributed, std 0.15, 0.3, 0.5), as from another transducer."""
    sd = (0.0, 0.15, 0.3, 0.5)[level]
    k = 1 / sd**2
    return _clip(img.astype(np.float32) * rng.gamma(k, 1 / k, size=img.shape).astype(np.float32))


def blur(img, level, rng):
    """Gaussian blur with sigma 1, 2, 3.5 pixels (per 500 px of width)."""
    s = (0.0, 1.0, 2.0, 3.5)[level] * img.shape[1] / 500
    return cv2.GaussianBlur(img, (0, 0), s)


def lowres(img, level, rng):
    """Lower resolution: down-sampled to 1/2, 1/3, 1/4 of its size and back up."""
    f = (1.0, 1 / 2, 1 / 3, 1 / 4)[level]
    h, w = img.shape
    small = cv2.resize(img, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def zoom(img, level, rng):
    """Zoom in: a centred crop keeping 90, 80, 70 % of each side (a different depth / field of view)."""
    f = (1.0, 0.9, 0.8, 0.7)[level]
    h, w = img.shape
    ch, cw = round(h * f), round(w * f)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw].copy()


def aspect(img, level, rng):
    """Aspect-ratio change: width stretched by 1.15, 1.3, 1.5 (another scanner's pixel spacing)."""
    h, w = img.shape
    return cv2.resize(img, (round(w * (1.0, 1.15, 1.3, 1.5)[level]), h), interpolation=cv2.INTER_LINEAR)


def overlay(img, level, rng):
    """Text and caliper marks drawn in white: 1, 2 or 4 caliper crosses and 1, 2 or 3 lines of text."""
    out = img.copy()
    h, w = out.shape
    n_marks, n_text = (0, 1, 2, 4)[level], (0, 1, 2, 3)[level]
    scale = w / 500
    for _ in range(n_marks):
        x, y = int(rng.integers(w // 6, 5 * w // 6)), int(rng.integers(h // 6, 5 * h // 6))
        cv2.drawMarker(out, (x, y), 255, cv2.MARKER_CROSS, int(14 * scale) | 1, max(1, int(2 * scale)))
    words = ["RT BREAST", "LT BREAST 2 O'CLOCK", "TRANS", "SAG", "D1 1.23cm", "D2 0.87cm", "12L-RS"]
    for _ in range(n_text):
        x, y = int(rng.integers(5, max(6, w // 2))), int(rng.integers(int(20 * scale), h - 5))
        cv2.putText(out, words[int(rng.integers(len(words)))], (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, 255,
                    max(1, int(1.5 * scale)), cv2.LINE_AA)
    return out


SHIFTS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "gain": gain, "gain_down": gain_down, "contrast": contrast, "gamma": gamma, "tgc": tgc, "speckle": speckle,
    "blur": blur, "lowres": lowres, "zoom": zoom, "aspect": aspect, "overlay": overlay,
}


def apply_shift(img: np.ndarray, name: str, level: int, seed: int = 0) -> np.ndarray:
    """Apply shift ``name`` at ``level`` (1-3) to a (H, W) uint8 image, deterministically for ``seed``."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; choose one of {', '.join(SHIFTS)}")
    if level not in LEVELS:
        raise ValueError(f"shift level must be one of {LEVELS}, got {level}")
    if img.ndim != 2 or img.dtype != np.uint8:
        raise ValueError(f"shifts take (H, W) uint8 grayscale images, got {img.shape} {img.dtype}")
    return SHIFTS[name](img, level, np.random.default_rng(seed))


def random_shift(img: np.ndarray, rng: np.random.Generator, p: float = 0.8, max_level: int = 2,
                 exclude: tuple[str, ...] = ()) -> np.ndarray:
    """Training augmentation: with probability ``p`` one random shift at a random level up to ``max_level``."""
    if rng.random() >= p:
        return img
    names = [n for n in SHIFTS if n not in exclude]
    name = names[int(rng.integers(len(names)))]
    return SHIFTS[name](img, int(rng.integers(1, max_level + 1)), rng)
