"""The segmenter's data: every image with a lesion mask, and normal images (an empty mask), as (S, S) arrays.

Images and masks are read once, made grey and squashed to the square (masks area-averaged: soft edges, 0..255);
the split is the classifier run's, so no validation image is ever trained on. Normal images (BUSI's, when BUSI is a
training source) are split by a hash of their key in the same proportion."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import cv2
import numpy as np

from rcdnet.data.decode import ImageReadError, read_image, read_mask, to_gray
from rcdnet.data.samples import CLASSES_3, DataProblem, Sample
from rcdnet.runtime import parallel_map


@dataclasses.dataclass
class MaskSet:
    """``images`` and ``masks`` (N, S, S) uint8, with each item's sample (a normal image's mask is empty) and the
    original's (H, W)."""

    samples: list[Sample]
    images: np.ndarray
    masks: np.ndarray
    shapes: list[tuple[int, int]]

    @property
    def has_lesion(self) -> np.ndarray:
        return np.array([s.label != "normal" for s in self.samples])


def normal_images(sources: tuple[str, ...], data_root: Path, val_fraction: float) -> dict[str, list[Sample]]:
    """{"train": [...], "val": [...]}: the normal (lesion-free) images of the named training sources that have
    them (BUSI's 133), split by a hash of their key."""
    from rcdnet.data.sources import READERS, load_dataset

    out: dict[str, list[Sample]] = {"train": [], "val": []}
    for name in sources:
        if name not in READERS:
            continue
        samples, _ = load_dataset(name, data_root, classes=CLASSES_3)
        for s in samples:
            if s.label == "normal":
                s = dataclasses.replace(s, key=s.key if s.key.startswith(f"{name}/") else f"{name}/{s.key}",
                                        mask_paths=())
                u = int(hashlib.sha256(s.key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
                out["val" if u < val_fraction else "train"].append(s)
    return out


def load_masks(samples: list[Sample], size: int) -> tuple[MaskSet, list[DataProblem]]:
    """The samples with a lesion mask (or labelled normal) as a :class:`MaskSet`; unreadable ones are problems."""
    def one(s: Sample):
        try:
            rgb = read_image(s.path)
            mask = read_mask(s.mask_paths, rgb.shape[:2]) if s.mask_paths else np.zeros(rgb.shape[:2], bool)
        except ImageReadError as exc:
            return DataProblem(str(s.path), str(exc).removeprefix(f"{s.path}: "))
        grey = cv2.resize(to_gray(rgb), (size, size), interpolation=cv2.INTER_AREA)
        soft = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        return s, grey, np.round(soft * 255).astype(np.uint8), rgb.shape[:2]

    usable = [s for s in samples if s.mask_paths or s.label == "normal"]
    items, problems = [], []
    for item in parallel_map(one, usable):
        (problems if isinstance(item, DataProblem) else items).append(item)
    if not items:
        empty = np.zeros((0, size, size), np.uint8)
        return MaskSet([], empty, empty.copy(), []), problems
    return MaskSet([it[0] for it in items], np.stack([it[1] for it in items]), np.stack([it[2] for it in items]),
                   [it[3] for it in items]), problems
