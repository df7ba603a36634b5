"""Binary metrics (malignant = positive class), with 95 % percentile-bootstrap confidence intervals.

Point estimates use scikit-learn; the bootstrap uses the same definitions vectorised in NumPy (checked against
scikit-learn in the tests) so that thousands of resamples take well under a second.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision", "recall", "f1",
           "sensitivity", "specificity", "auc")


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """``y`` (N,) in {0, 1}, ``p`` (N,) malignancy probabilities -> metrics at ``threshold`` (p >= t is malignant).

    ``precision/recall/f1`` take malignant as the positive class; ``*_macro`` average both classes, as the
    paper's tables appear to."""
    y = np.asarray(y, int)
    p = np.asarray(p, float)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    pm, rm, fm, _ = precision_recall_fscore_support(y, pred, average="macro", labels=[0, 1], zero_division=0)
    pb, rb, fb, _ = precision_recall_fscore_support(y, pred, average="binary", pos_label=1, zero_division=0)
    return {
        "accuracy": float((tp + tn) / len(y)),
        "precision_macro": float(pm), "recall_macro": float(rm), "f1_macro": float(fm),
        "precision": float(pb), "recall": float(rb), "f1": float(fb),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "auc": float(roc_auc_score(y, p)) if len(set(y)) == 2 else float("nan"),
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn), "n": len(y), "threshold": float(threshold),
    }


def _vector_metrics(Y: np.ndarray, P: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Metrics for B resamples at once: ``Y``, ``P`` of shape (B, N)."""
    pred = P >= threshold
    pos = Y == 1
    tp = (pred & pos).sum(1).astype(float)
    fp = (pred & ~pos).sum(1).astype(float)
    fn = (~pred & pos).sum(1).astype(float)
    tn = (~pred & ~pos).sum(1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        n_pos, n_neg = pos.sum(1), (~pos).sum(1)
        ranks = rankdata(P, axis=1)
        auc = ((ranks * pos).sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        return _rates(tp, fp, fn, tn, auc)


def _weighted_metrics(y: np.ndarray, p: np.ndarray, W: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """:func:`_vector_metrics` for B resamples given as weights: ``W`` (B, N), how often each image was drawn."""
    order = np.argsort(p, kind="mergesort")
    ps, pos, Ws = p[order], y[order] == 1, W[:, order].astype(float)
    pred = ps >= threshold
    tp, fp = (Ws * (pred & pos)).sum(1), (Ws * (pred & ~pos)).sum(1)
    fn, tn = (Ws * (~pred & pos)).sum(1), (Ws * (~pred & ~pos)).sum(1)
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])  # runs of tied scores: half credit within a run
    neg, posw = np.add.reduceat(Ws * ~pos, starts, axis=1), np.add.reduceat(Ws * pos, starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (posw * (np.cumsum(neg, axis=1) - neg / 2)).sum(1) / (posw.sum(1) * neg.sum(1))
        return _rates(tp, fp, fn, tn, auc)


def weighted_auc(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    """(B,) AUCs of B resamples given as weights ``W`` (B, N) (how often each image was drawn); NaN where a
    resample holds one class only. Ties get half credit, as in the rank AUC."""
    return _weighted_metrics(np.asarray(y, int), np.asarray(p, float), W, 0.5)["auc"]


def _rates(tp, fp, fn, tn, auc) -> dict[str, np.ndarray]:
    """Every metric from the (B,) confusion counts and AUCs of B resamples."""
    prec1 = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
    rec1 = tp / (tp + fn)
    prec0 = np.where(tn + fn > 0, tn / (tn + fn), 0.0)
    rec0 = tn / (tn + fp)
    f1 = np.where(prec1 + rec1 > 0, 2 * prec1 * rec1 / (prec1 + rec1), 0.0)
    f0 = np.where(prec0 + rec0 > 0, 2 * prec0 * rec0 / (prec0 + rec0), 0.0)
    return {
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
        "precision_macro": (prec0 + prec1) / 2, "recall_macro": (rec0 + rec1) / 2, "f1_macro": (f0 + f1) / 2,
        "precision": prec1, "recall": rec1, "f1": f1, "sensitivity": rec1, "specificity": rec0, "auc": auc,
    }


def bootstrap_ci(y: np.ndarray, p: np.ndarray, threshold: float = 0.5, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95, groups: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap: metric -> (low, high). Resamples images with replacement, or, given ``groups`` (N,)
    (a patient, a duplicate group), whole groups: every image of a drawn group comes along, so near-copies of one
    lesion do not count as independent evidence.

    Resamples holding a single class are skipped for AUC and class-wise rates (NaN-aware)."""
    return bootstrap_mean_ci(y, np.asarray(p, float)[None], threshold, n_boot, seed, level, groups)


def bootstrap_mean_ci(y: np.ndarray, P: np.ndarray, threshold: float = 0.5, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95, groups: np.ndarray | None = None) -> dict[str, tuple[float, float]]:
    """CIs of metrics averaged over K models scored on the same N images (``P`` (K, N), e.g. one training seed
    per row): each resample draws the images (or, given ``groups`` (N,), whole groups) once, scores every model on
    it and averages the K metrics. Groups are drawn as the images are, so groups of one give the image CIs."""
    y = np.asarray(y, int)
    P = np.asarray(P, float)
    rng = np.random.default_rng(seed)
    if groups is not None:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        n_groups = int(inverse.max()) + 1
    out: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for start in range(0, n_boot, 500):
        b = min(500, n_boot - start)
        if groups is None:
            idx = rng.integers(0, len(y), size=(b, len(y)))
            per_model = [_vector_metrics(y[idx], pk[idx], threshold) for pk in P]
        else:  # resampled groups as per-image weights (how often each image was drawn)
            draws = rng.integers(0, n_groups, size=(b, n_groups)) + n_groups * np.arange(b)[:, None]
            counts = np.bincount(draws.ravel(), minlength=b * n_groups).reshape(b, n_groups)[:, inverse]
            per_model = [_weighted_metrics(y, pk, counts, threshold) for pk in P]
        for k in METRICS:
            out[k].append(np.mean([m[k] for m in per_model], axis=0))
    alpha = (1 - level) / 2
    return {k: (float(np.nanquantile(np.concatenate(v), alpha)), float(np.nanquantile(np.concatenate(v), 1 - alpha)))
            for k, v in out.items()}


def metrics_with_ci(y: np.ndarray, p: np.ndarray, threshold: float = 0.5, n_boot: int = 2000,
                    seed: int = 0, groups: np.ndarray | None = None) -> dict[str, dict]:
    """Point estimates and CIs together: metric -> {"value": v, "ci": [lo, hi]} plus the confusion counts; the CIs
    resample ``groups`` whole when given (:func:`bootstrap_ci`)."""
    point = binary_metrics(y, p, threshold)
    ci = bootstrap_ci(y, p, threshold, n_boot, seed, groups=groups) if n_boot > 0 else {}
    out: dict[str, dict] = {m: {"value": point[m], "ci": list(ci[m]) if m in ci else None} for m in METRICS}
    out["counts"] = {k: point[k] for k in ("tp", "fp", "tn", "fn", "n")}
    out["threshold"] = threshold
    return out

