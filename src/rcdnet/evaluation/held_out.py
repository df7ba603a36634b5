"""One hospital held out (``rcdnet cv --by-source``): its scores over seeds as one typed record.

``loso_metrics.json`` stores one per source (``sources``: name -> :meth:`HeldOutScore.to_dict`); the LOSO page, the
model card and the selection scripts read them back with :meth:`HeldOutScore.from_dict`."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from rcdnet.evaluation.calibration import expected_calibration_error
from rcdnet.evaluation.metrics import bootstrap_mean_ci, weighted_auc
from rcdnet.evaluation.results import Evaluation

OPERATING_POINTS = ("default", "high_sensitivity")


@dataclasses.dataclass(frozen=True)
class HeldOutScore:
    """A held-out source scored by K models (one per seed), each trained without it.

    AUC: per seed, their mean with a cluster-bootstrap interval and their sd; the seed ensemble (the seeds' mean
    probability): AUC, calibration error, mean probability; the means over seeds of the calibration error (after /
    before the fold's temperature) and of sensitivity / specificity at each operating point chosen without the source;
    each seed's thresholds; the folds' lesion finders on the source (None where they trained none)."""
    n: int
    n_malignant: int
    clusters: int
    auc_per_seed: tuple[float, ...]
    auc: float
    auc_ci: tuple[float, float]
    auc_seed_sd: float | None
    ensemble_auc: float
    ensemble_auc_ci: tuple[float, float]
    ensemble_ece: float
    ensemble_mean_p: float | None
    ece: float | None
    ece_before_temperature: float | None
    default_sensitivity: float | None
    default_specificity: float | None
    high_sensitivity_sensitivity: float | None
    high_sensitivity_specificity: float | None
    thresholds: tuple[dict, ...]
    finder: dict | None = None

    @property
    def malignant_share(self) -> float:
        return self.n_malignant / self.n

    @classmethod
    def measure(cls, y: np.ndarray, P: np.ndarray, groups: np.ndarray, per_seed: list[dict],
                n_boot: int) -> HeldOutScore:
        """``y`` (N,) labels, ``P`` (K, N) the K seeds' probabilities of the same N images, ``groups`` (N,) their
        clusters (patients, duplicate groups), ``per_seed`` the K folds' metrics files; ``n_boot`` 0: no intervals."""
        ones = np.ones((1, len(y)))
        aucs = tuple(float(weighted_auc(y, p, ones)[0]) for p in P)
        mean_p = P.mean(axis=0)
        ci, ens_ci = ((bootstrap_mean_ci(y, Q, 0.5, n_boot, 0, groups=groups)["auc"] for Q in (P, mean_p[None]))
                      if n_boot else [(float("nan"),) * 2] * 2)
        points = [Evaluation.from_dict(m).points for m in per_seed]

        def mean(values: list[float | None]) -> float | None:
            kept = [v for v in values if v is not None]
            return float(np.mean(kept)) if kept else None

        rates = {f"{op}_{k}": mean([p[op][k].value if op in p else None for p in points])
                 for op in OPERATING_POINTS for k in ("sensitivity", "specificity")}
        return cls(n=len(y), n_malignant=int(y.sum()), clusters=len(set(groups)), auc_per_seed=aucs,
                   auc=float(np.mean(aucs)), auc_ci=(float(ci[0]), float(ci[1])),
                   auc_seed_sd=float(np.std(aucs, ddof=1)) if len(aucs) > 1 else None,
                   ensemble_auc=float(weighted_auc(y, mean_p, ones)[0]),
                   ensemble_auc_ci=(float(ens_ci[0]), float(ens_ci[1])),
                   ensemble_ece=expected_calibration_error(y, mean_p), ensemble_mean_p=float(mean_p.mean()),
                   ece=mean([m["ece"] for m in per_seed]),
                   ece_before_temperature=mean([m["ece_before_temperature"] for m in per_seed]),
                   thresholds=tuple({op: v.threshold for op, v in p.items()} for p in points), **rates)

    @classmethod
    def from_folds(cls, dirs: list[Path], held: str, n_boot: int = 2000) -> HeldOutScore:
        """The K seeds' folds (``dirs``, each holding ``<held>_predictions.csv`` and ``<held>_metrics.json`` as
        ``rcdnet evaluate --dataset HELD --out DIR`` writes them) scored on ``held``; they must have scored the same
        images."""
        rows = []
        for d in dirs:
            with open(Path(d) / f"{held}_predictions.csv", newline="") as fh:
                rows.append({r["key"]: r for r in csv.DictReader(fh)})
        keys = sorted(rows[0])
        if any(sorted(r) != keys for r in rows):
            raise ValueError(f"{held}: the folds {[str(d) for d in dirs]} scored different images")
        y = np.array([rows[0][k]["label"] == "malignant" for k in keys], int)
        P = np.array([[float(r[k]["p_malignant"]) for k in keys] for r in rows])
        per_seed = [json.loads((Path(d) / f"{held}_metrics.json").read_text()) for d in dirs]
        return cls.measure(y, P, np.array([rows[0][k]["group"] for k in keys]), per_seed, n_boot)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["finder"] is None:
            del d["finder"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> HeldOutScore:
        """From ``to_dict`` (or an older ``loso_metrics.json``: a field it lacks reads None)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"held-out score: unknown fields {sorted(unknown)}")
        v = {f.name: d.get(f.name) for f in dataclasses.fields(cls)}
        for k in ("auc_per_seed", "auc_ci", "ensemble_auc_ci", "thresholds"):
            v[k] = tuple(v[k]) if v[k] is not None else None
        return cls(**v)
