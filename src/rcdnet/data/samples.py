"""The unit of data (:class:`Sample`) and robust image / mask reading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

CLASSES_2 = ("benign", "malignant")
CLASSES_3 = ("normal", "benign", "malignant")


class ImageReadError(ValueError):
    """An image or mask file that cannot be used; the message names the file and the problem."""


@dataclasses.dataclass
class Sample:
    """One image with its label.

    ``label`` is a class name (``benign`` / ``malignant`` / ``normal``); ``key`` is a stable identifier
    (``busi/benign (12)``, ``udiat/000012``, or the path for user data); ``group`` is filled by duplicate
    screening (or given by a user's CSV) and keeps near-duplicates on one side of a split.
    """

    path: Path
    label: str
    key: str
    source: str
    mask_paths: tuple[Path, ...] = ()
    group: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    def to_row(self) -> dict:
        return {
            "key": self.key,
            "path": str(self.path),
            "label": self.label,
            "source": self.source,
            "group": self.group or "",
            "masks": ";".join(str(p) for p in self.mask_paths),
        }


@dataclasses.dataclass
class DataProblem:
    """A file that was skipped or looks wrong, with the reason; collected, never fatal."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def _open(path: Path) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file does not exist")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    try:
        img = Image.open(path)
        img.load()  # forces a full decode: catches truncated files
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: corrupt or truncated image ({exc})") from None
    return img


def read_image(path: Path | str) -> np.ndarray:
    """Read an image file as RGB ``uint8`` of shape (H, W, 3). Grayscale, palette, 16-bit and RGBA are
    all accepted (8-bit grayscale and three identical RGB channels give the same array)."""
    img = _open(Path(path))
    if img.mode in ("I;16", "I;16B", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / (hi - lo + 1e-12) * 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    arr = np.asarray(img.convert("RGB"))
    if arr.ndim != 3 or arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ImageReadError(f"{path}: image too small or malformed (shape {arr.shape})")
    return arr


def read_mask(paths: tuple[Path, ...] | list[Path], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read and merge (logical OR) one or more lesion masks into a boolean (H, W) array.

    ``shape`` is the image's (H, W); a mask of another size is an error naming the file."""
    merged = None
    for p in paths:
        arr = np.asarray(_open(Path(p)).convert("L")) > 127
        if shape is not None and arr.shape != tuple(shape):
            raise ImageReadError(f"{p}: mask is {arr.shape[1]}x{arr.shape[0]} but its image is {shape[1]}x{shape[0]}")
        if merged is not None and arr.shape != merged.shape:
            raise ImageReadError(f"{p}: mask size differs from the image's other masks")
        merged = arr if merged is None else (merged | arr)
    if merged is None:
        raise ImageReadError("no mask files given")
    return merged


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luminance."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
