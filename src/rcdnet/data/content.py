"""Pictures with nothing in them get no diagnosis: a blank frame (every pixel within a few grey levels: a black or
white screen, a lost signal) is skipped, and a file of blank frames only is refused as "not an ultrasound image"."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from rcdnet.data.decode import Frame, ImageReadError

BLANK_LEVELS = 8  # a range of grey levels below this holds no tissue: noise on an empty screen


def blank(rgb: np.ndarray) -> bool:
    """Whether an (H, W, 3) uint8 picture holds no image content."""
    return int(rgb.max()) - int(rgb.min()) < BLANK_LEVELS


def check_content(rgb: np.ndarray, path: str | Path) -> np.ndarray:
    """``rgb`` if it holds an image; else an :class:`ImageReadError` naming ``path`` (datasets and CSVs: a blank
    picture is never scored as a case)."""
    if blank(rgb):
        raise ImageReadError(f"{path}: no image content (the picture is blank: every pixel within {BLANK_LEVELS} grey "
                             "levels): not an ultrasound image, no diagnosis given")
    return rgb


def with_content(frames: Iterable[Frame], path: str | Path) -> Iterator[Frame]:
    """The frames of ``frames`` that hold an image; an :class:`ImageReadError` naming ``path`` once they are done if
    none did. Errors of the frames themselves pass through unchanged."""
    kept, seen = 0, 0
    for frame in frames:
        seen += 1
        if not blank(frame.rgb):
            kept += 1
            yield frame
    if seen and not kept:
        what = "the picture is" if seen == 1 else f"all {seen} frames are"
        raise ImageReadError(f"{path}: no image content ({what} blank: every pixel within {BLANK_LEVELS} grey "
                             "levels): not an ultrasound image, no diagnosis given")
