"""DeLong's test: paired comparison of correlated AUCs (DeLong, DeLong & Clarke-Pearson, Biometrics 1988).

Implemented with the placement-value formulation (Sun & Xu, IEEE Signal Process. Lett. 2014): each positive's
share of negatives it outranks (ties count one half) and each negative's share of positives that outrank it give
the AUCs and their covariance. Checked against R's pROC on its published aSAH example (tests/evaluation).

With ``groups`` (a patient, a duplicate group) the covariance is Obuchowski's clustered form (Biometrics 1997):
placements are summed per cluster, so near-copies of one lesion are not counted as independent cases; with groups of
one it is DeLong's exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.stats import norm, rankdata


@dataclasses.dataclass(frozen=True)
class DeLongResult:
    auc_a: float
    auc_b: float
    difference: float          # auc_a - auc_b
    se: float                  # standard error of the difference
    z: float
    p_value: float             # two-sided
    ci: tuple[float, float]    # 95 % CI of the difference


def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``scores`` (K, N) for K classifiers -> AUCs (K,), positive placements (K, m), negative placements (K, n)."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    r_all = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    r_pos, r_neg = rankdata(pos, axis=1), rankdata(neg, axis=1)
    v10 = (r_all[:, :m] - r_pos) / n            # per positive: share of negatives below it
    v01 = 1.0 - (r_all[:, m:] - r_neg) / m      # per negative: share of positives above it
    return v10.mean(axis=1), v10, v01


def _clustered(aucs: np.ndarray, v10: np.ndarray, v01: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Obuchowski's covariance (K, K) from placements summed per cluster."""
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    n_clusters = int(g.max()) + 1
    gp, gn = g[y == 1], g[y == 0]
    m, n = len(gp), len(gn)
    m_i, n_i = np.bincount(gp, minlength=n_clusters), np.bincount(gn, minlength=n_clusters)
    vx = np.stack([np.bincount(gp, weights=v, minlength=n_clusters) for v in v10])  # (K, clusters)
    vy = np.stack([np.bincount(gn, weights=v, minlength=n_clusters) for v in v01])
    dx, dy = vx - aucs[:, None] * m_i, vy - aucs[:, None] * n_i
    c10, c01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    s10 = c10 / ((c10 - 1) * m) * dx @ dx.T
    s01 = c01 / ((c01 - 1) * n) * dy @ dy.T
    s11 = n_clusters / (n_clusters - 1) * dx @ dy.T
    return s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def delong_covariance(y: np.ndarray, *scores: np.ndarray, groups: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``y`` (N,) in {0, 1}; each score (N,) -> (AUCs (K,), DeLong covariance matrix (K, K)); ``groups`` (N,):
    clusters of cases (Obuchowski's form)."""
    y = np.asarray(y, int)
    if set(np.unique(y)) != {0, 1}:
        raise ValueError("DeLong needs both classes (labels 0 and 1) in y")
    s = np.vstack([np.asarray(x, float) for x in scores])
    if s.shape[1] != len(y):
        raise ValueError(f"scores have {s.shape[1]} values, labels {len(y)}")
    aucs, v10, v01 = _placements(y, s)
    if groups is not None:
        return aucs, _clustered(aucs, v10, v01, y, np.asarray(groups))
    m, n = v10.shape[1], v01.shape[1]
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, level: float = 0.95,
                groups: np.ndarray | None = None) -> DeLongResult:
    """Two-sided DeLong test of AUC(a) = AUC(b) on the same cases (paired); ``groups``: clusters of cases."""
    aucs, cov = delong_covariance(y, scores_a, scores_b, groups=groups)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se == 0:
        z, p = (0.0, 1.0) if diff == 0 else (float(np.sign(diff) * np.inf), 0.0)
    else:
        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    q = norm.ppf(0.5 + level / 2)
    return DeLongResult(float(aucs[0]), float(aucs[1]), diff, se, float(z), p, (diff - q * se, diff + q * se))


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given), for several comparisons on one test set."""
    p = np.asarray(p_values, float)
    order = np.argsort(p)
    k = len(p)
    adjusted = np.empty(k)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
