"""The rule that chooses the default recipe by leave-one-source-out (LOSO) over the four hospitals (docs/loso.md).

Every candidate recipe is run by ``rcdnet cv --by-source --seeds ...``: for each source, models trained on the
others (one per seed) score every image of it. The rule, fixed in docs/loso.md before any of its runs:

1. a candidate's AUC on a held-out source is the mean over its seeds; its **LOSO score** is the mean of those over the
   sources, its **worst source** the lowest;
2. the **leader** has the highest LOSO score;
3. a candidate is *not distinguishable* from the leader when the 95 % interval of (leader - candidate) LOSO score
   reaches 0. Its variance adds two parts: the held-out images' (a paired bootstrap that draws clusters - patients,
   duplicate groups - the same for both candidates, each source independently, the seeds' AUCs averaged in every
   draw) and the training runs' (the seed-to-seed variance of each candidate's LOSO score over its number of seeds);
4. *eligible*: not distinguishable from the leader, and a worst-source AUC no more than :data:`WORST_MARGIN` below
   the leader's;
5. among the eligible the fewest options over the paper's recipe wins; a tie in options goes to the higher score.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rcdnet.evaluation.metrics import weighted_auc
from rcdnet.evaluation.selection import bootstrap_differences, check_paired

WORST_MARGIN = 0.02  # the seed-spread target: a worst source this much lower is a real loss
Z95 = 1.959964


@dataclasses.dataclass
class SourceScores:
    """One held-out source: labels (N,) 0/1, probabilities (K, N) from K seeds, a cluster id per image (N,)."""

    y: np.ndarray
    P: np.ndarray
    clusters: np.ndarray

    @property
    def aucs(self) -> np.ndarray:
        """(K,) held-out AUC of each seed."""
        return np.array([weighted_auc(self.y, p, np.ones((1, len(self.y))))[0] for p in np.atleast_2d(self.P)])

    @property
    def auc(self) -> float:
        return float(self.aucs.mean())


@dataclasses.dataclass
class LosoCandidate:
    """A recipe: its name, how many options it adds to the paper's recipe, and its held-out scores per source."""

    name: str
    n_options: int
    sources: dict[str, SourceScores]
    extra_variance: float | None = None  # training-noise variance of a candidate with one row of P (a seed ensemble:
                                         # its members' seed variance), where its own seeds cannot measure it

    @property
    def score(self) -> float:
        """The LOSO score: mean over sources of the seed-mean held-out AUC."""
        return float(np.mean([s.auc for s in self.sources.values()]))

    @property
    def worst(self) -> tuple[str, float]:
        name = min(self.sources, key=lambda k: self.sources[k].auc)
        return name, self.sources[name].auc

    @property
    def seed_scores(self) -> np.ndarray:
        """(K,) the LOSO score of each seed (seeds aligned across sources)."""
        return np.mean([s.aucs for s in self.sources.values()], axis=0)

    @property
    def seed_variance(self) -> float:
        """Variance of the seed-mean LOSO score from training noise: sample variance over seeds / K (0 for K=1)."""
        k = len(self.seed_scores)
        if self.extra_variance is not None:
            return self.extra_variance
        return float(np.var(self.seed_scores, ddof=1) / k) if k > 1 else 0.0


def compared(a: LosoCandidate, b: LosoCandidate, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(score(a) - score(b), 95 % interval low, high): paired cluster bootstrap over the held-out images plus both
    candidates' seed variance (module docstring, step 3)."""
    check_paired(a.name, b.name, a.sources, b.sources)
    diffs = bootstrap_differences([(a.sources[k].y, a.sources[k].clusters, a.sources[k].P, b.sources[k].P)
                                   for k in sorted(a.sources)], n_boot, seed)
    d = a.score - b.score
    half = Z95 * float(np.sqrt(np.var(diffs, ddof=1) + a.seed_variance + b.seed_variance))
    return d, d - half, d + half


@dataclasses.dataclass(frozen=True)
class CandidateRow:
    """One candidate as the rule saw it: its scores, its difference from the leader and why it is (not) eligible."""

    name: str
    n_options: int
    n_seeds: int
    seed_sd: float | None  # the seed-to-seed sd of its LOSO score (None with one seed)
    aucs: dict[str, float]  # held-out source -> seed-mean AUC
    score: float
    worst_source: str
    worst_auc: float
    behind_leader: float  # leader's score - this one's (0 for the leader)
    ci: tuple[float, float]  # its 95 % interval
    close: bool  # not distinguishable from the leader (the interval reaches 0)
    worst_ok: bool  # its worst source at most WORST_MARGIN below the leader's

    @property
    def eligible(self) -> bool:
        return self.close and self.worst_ok


@dataclasses.dataclass
class LosoChoice:
    chosen: LosoCandidate
    leader: LosoCandidate
    rows: list[CandidateRow]


def choose_by_loso(candidates: list[LosoCandidate], n_boot: int = 2000, seed: int = 0) -> LosoChoice:
    """Apply the rule (module docstring) to ``candidates``."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    leader = max(candidates, key=lambda c: (c.score, -c.n_options))
    rows = []
    for c in candidates:
        d, lo, hi = (0.0, 0.0, 0.0) if c is leader else compared(leader, c, n_boot, seed)
        k = len(c.seed_scores)
        rows.append(CandidateRow(c.name, c.n_options, k, float(np.std(c.seed_scores, ddof=1)) if k > 1 else None,
                                 {s: v.auc for s, v in c.sources.items()}, c.score, *c.worst, d, (lo, hi), lo <= 0.0,
                                 c.worst[1] >= leader.worst[1] - WORST_MARGIN))
    chosen = min((c for c, r in zip(candidates, rows) if r.eligible), key=lambda c: (c.n_options, -c.score))
    return LosoChoice(chosen, leader, rows)
