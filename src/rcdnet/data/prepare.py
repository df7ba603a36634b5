"""From a data root to train / validation arrays: read every source, (limit), screen duplicates, group (duplicates
and patients), split, preprocess."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rcdnet.config import RunConfig
from rcdnet.data.duplicates import DuplicatePair, find_duplicates, group_pool
from rcdnet.data.preprocess import Preprocessor, preprocess_samples
from rcdnet.data.samples import CLASSES_2, CLASSES_3, DataProblem, Sample
from rcdnet.data.sources import load_dataset, load_sources
from rcdnet.data.split import split_train_val


def classes_from_config(cfg: RunConfig) -> tuple[str, ...]:
    n = cfg.data.classes
    if n not in (2, 3):
        raise ValueError(f"data.classes must be 2 or 3, got {n}")
    return CLASSES_2 if n == 2 else CLASSES_3


def stratified_limit(samples: list[Sample], n: int, seed: int) -> list[Sample]:
    """A seeded subset of ``n`` samples with the source and class proportions of the whole (at least 2 of each
    source and class)."""
    if n >= len(samples):
        return samples
    rng = np.random.default_rng(seed)
    by_class: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        by_class.setdefault((s.source, s.label), []).append(s)
    out = []
    for _, members in sorted(by_class.items()):
        k = max(2, round(n * len(members) / len(samples)))
        out += [members[i] for i in sorted(rng.choice(len(members), size=min(k, len(members)), replace=False))]
    return out


@dataclasses.dataclass
class PreparedData:
    samples: list[Sample]                 # usable training-pool samples, with .group set
    images: np.ndarray                    # (N, S, S) uint8, aligned with samples
    split: dict[str, str]                 # key -> train / val
    pairs: list[DuplicatePair]            # verified duplicate pairs (training pool and external sets)
    conflicts: dict[str, list[Sample]]    # duplicate groups with mixed labels (left out by default)
    external_overlap: list[DuplicatePair]  # pairs that join the training pool to an external set
    problems: list[DataProblem]

    def subset(self, which: str) -> tuple[list[Sample], np.ndarray]:
        idx = [i for i, s in enumerate(self.samples) if self.split[s.key] == which]
        return [self.samples[i] for i in idx], self.images[idx]


def prepare_training_data(cfg: RunConfig, data_root: Path, *, cache_dir: Path | None = None,
                          saved_split: dict[str, str] | None = None, progress: bool = True) -> PreparedData:
    """Everything before the first epoch. ``saved_split`` (key -> split) reuses a run's split exactly."""
    classes = classes_from_config(cfg)
    clash = sorted(set(cfg.data.external) & set(cfg.data.sources))
    if clash:
        raise ValueError(f"data.external {clash} is also in data.sources: an external test set is never trained on")
    samples, problems = load_sources(cfg.data.sources, data_root, classes)
    if cfg.data.limit:
        samples = stratified_limit(samples, cfg.data.limit, cfg.split_seed)
    external: list[Sample] = []
    for name in cfg.data.external:
        ext, ext_problems = load_dataset(name, data_root, classes=classes)
        external += ext
        problems += ext_problems
    pairs, unreadable = find_duplicates(samples + external, cache_dir=cache_dir, progress=progress)
    problems += [DataProblem(p, why) for p, why in unreadable]
    pool_keys = {s.key for s in samples}
    conflicts = group_pool(samples, [p for p in pairs if p.a in pool_keys and p.b in pool_keys])
    if cfg.data.drop_label_conflicts and conflicts:
        bad = {s.key for members in conflicts.values() for s in members}
        samples = [s for s in samples if s.key not in bad]
    overlap = [p for p in pairs if (p.a in pool_keys) != (p.b in pool_keys)]
    samples, images, pre_problems = preprocess_samples(samples, Preprocessor.from_config(cfg.data), cache_dir,
                                                      progress)
    problems += pre_problems
    if saved_split is not None:
        missing = [s.key for s in samples if s.key not in saved_split]
        if missing:
            raise ValueError(f"the saved split does not cover {len(missing)} images (e.g. {missing[0]}): "
                             "the data changed since the run started")
        split = {s.key: saved_split[s.key] for s in samples}
    else:
        split = split_train_val(samples, {s.key: s.group for s in samples}, cfg.data.val_fraction, cfg.split_seed)
    return PreparedData(samples, images, split, pairs, conflicts, overlap, problems)
