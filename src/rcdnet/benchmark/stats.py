"""The benchmark's numbers, from the finished jobs' prediction files alone.

Per row and test set, every metric is the mean ± sd over the row's seeds, with a 95 % bootstrap CI of that mean
(images resampled once per draw, every seed scored on the same draw). Metrics are at p >= 0.5 on the
temperature-scaled probability, precision / recall / F1 macro-averaged as in the paper's tables. DeLong compares
the reference row with every other on the seed-mean probabilities, Holm-adjusted over the comparisons of a test
set.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from rcdnet.benchmark.profile import Profile, Row
from rcdnet.data.inputs import VALIDATION
from rcdnet.evaluation.delong import delong_test, holm
from rcdnet.evaluation.metrics import binary_metrics, bootstrap_mean_ci

TEST_SETS = {VALIDATION: "internal validation (BUSI)", "udiat": "external test (UDIAT)"}
# the paper's table columns first, then ours
COLUMNS = [("precision_macro", "Precision"), ("recall_macro", "Recall"), ("f1_macro", "F1-score"),
           ("accuracy", "Accuracy"), ("auc", "AUC"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity")]


def read_predictions(path: Path) -> dict[str, tuple[int, float, str]]:
    """``<set>_predictions.csv`` -> key -> (1 if malignant, p_malignant, group: the image's duplicate / patient group,
    the key itself in files written before groups were)."""
    with open(path, newline="") as fh:
        return {r["key"]: (int(r["label"] == "malignant"), float(r["p_malignant"]), r.get("group") or r["key"])
                for r in csv.DictReader(fh)}


def row_groups(profile: Profile, out: Path, row: Row, test_set: str) -> np.ndarray:
    """The groups of :func:`row_predictions`' images (same order), from the row's first finished seed."""
    job = next(j for j in profile.jobs(out) if j.row.id == row.id and j.done)
    preds = read_predictions(job.directory / f"{test_set}_predictions.csv")
    return np.array([preds[k][2] for k in sorted(preds)])


def row_predictions(profile: Profile, out: Path, row: Row, test_set: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(seeds found, y (N,), P (seeds, N)) for one row on one test set, aligned by image key."""
    seeds, per_seed = [], []
    for job in profile.jobs(out):
        if job.row.id == row.id and job.done:
            seeds.append(job.seed)
            per_seed.append(read_predictions(job.directory / f"{test_set}_predictions.csv"))
    if not per_seed:
        return [], np.zeros(0, int), np.zeros((0, 0))
    keys = sorted(per_seed[0])
    for s, preds in zip(seeds[1:], per_seed[1:]):
        if sorted(preds) != keys:
            raise ValueError(f"{row.id}: seed {s} was evaluated on other {test_set} images than seed {seeds[0]} "
                             "(the split must not depend on the seed: data.split_seed)")
    y = np.array([per_seed[0][k][0] for k in keys])
    return seeds, y, np.array([[preds[k][1] for k in keys] for preds in per_seed])


def summarise(y: np.ndarray, P: np.ndarray, n_boot: int, groups: np.ndarray | None = None) -> dict[str, dict]:
    """metric -> {mean, sd, lo, hi, per_seed} at p >= 0.5; the intervals resample ``groups`` whole."""
    per_seed = [binary_metrics(y, p, 0.5) for p in P]
    ci = bootstrap_mean_ci(y, P, 0.5, n_boot, groups=groups)
    out = {}
    for key, _ in COLUMNS:
        vals = np.array([m[key] for m in per_seed])
        out[key] = {"mean": float(vals.mean()), "sd": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                    "lo": ci[key][0], "hi": ci[key][1], "per_seed": vals.round(6).tolist()}
    return out


def delong_rows(profile: Profile, mean_p: dict) -> list[dict]:
    ref = profile.reference
    rows = []
    for test_set in TEST_SETS:
        if test_set not in mean_p.get(ref, {}):
            continue
        y, p_ref, groups = mean_p[ref][test_set]
        block = []
        for rid in profile.rows:
            if rid == ref or test_set not in mean_p.get(rid, {}):
                continue
            r = delong_test(y, p_ref, mean_p[rid][test_set][1], groups=groups)
            block.append({"test_set": test_set, "reference": ref, "other": rid, "auc_reference": round(r.auc_a, 4),
                          "auc_other": round(r.auc_b, 4), "difference": round(r.difference, 4),
                          "ci_lo": round(r.ci[0], 4), "ci_hi": round(r.ci[1], 4), "z": round(r.z, 3),
                          "p": r.p_value})
        for b, adj in zip(block, holm([b["p"] for b in block])):
            b["p_holm"] = adj
        rows += block
    return rows


def training_minutes(profile: Profile, out: Path) -> dict[str, dict]:
    times: dict[str, dict] = {}
    for job in profile.jobs(out):
        if not job.done:
            continue
        m = json.loads((job.directory / "metrics.json").read_text())
        info = json.loads((job.directory / "job.json").read_text()) if (job.directory / "job.json").is_file() else {}
        t = times.setdefault(job.row.id, {"minutes": [], "threads": info.get("threads")})
        t["minutes"].append(m["timing"]["total_seconds"] / 60)
    for t in times.values():
        t["mean"] = round(float(np.mean(t["minutes"])), 2)
    return times


