"""The paper's 7:3 train / validation split, made stratified AND group-aware, seeded, and saved."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from rcdnet.data.samples import Sample
from rcdnet.files import write_csv


def group_folds(labels: list[str], groups: list[str], k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per sample from scikit-learn's StratifiedGroupKFold: every duplicate group inside one
    fold, each fold with about the classes' overall proportions."""
    if len(set(groups)) < k:
        raise ValueError(f"only {len(set(groups))} groups: too few for {k} group-aware folds")
    sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold_of = np.empty(len(labels), int)
    for fold, (_, test_idx) in enumerate(sgkf.split(np.zeros(len(labels)), np.array(labels), np.array(groups))):
        fold_of[test_idx] = fold
    return fold_of


def split_train_val(samples: list[Sample], groups: dict[str, str], val_fraction: float = 0.3,
                    seed: int = 0) -> dict[str, str]:
    """Assign every sample to ``train`` or ``val`` so that no group (duplicates, a patient) spans both and each
    source and class keeps about ``val_fraction`` of its images in validation: k group folds (k from the fraction,
    e.g. 3 of 10 folds for 0.3) of :func:`group_folds`, stratified by source and class. Returns key -> split."""
    frac = Fraction(val_fraction).limit_denominator(20)
    if not 0 < frac < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    k, n_val = frac.denominator, frac.numerator
    try:
        fold_of = group_folds([f"{s.source}/{s.label}" for s in samples], [groups[s.key] for s in samples], k, seed)
    except ValueError:
        raise ValueError(f"only {len(set(groups.values()))} groups: too few for a {val_fraction:.0%} group-aware "
                         "split") from None
    return {s.key: ("val" if fold_of[i] < n_val else "train") for i, s in enumerate(samples)}


def save_split(path: Path, samples: list[Sample], split: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(path, [{"key": s.key, "path": str(s.path), "label": s.label, "source": s.source,
                      "group": s.group or "", "split": split[s.key]} for s in samples],
              ["key", "path", "label", "source", "group", "split"])


def load_split(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"key", "path", "label", "split"} <= set(rows[0]):
        raise ValueError(f"{path}: not a split file (needs key,path,label,split columns)")
    return rows
