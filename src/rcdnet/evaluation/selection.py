"""The rule that chooses the default configuration by transfer to a source it was not trained on.

Each candidate is trained on one training source and scored on every image of another it never saw (leave one source
out, as in DomainBed); its **transfer score** is the mean of those held-out AUCs over the directions run
(BUSI -> BUS-UCLM, BUS-UCLM -> BUSI). Differences between candidates are judged on the same held-out images by a
paired bootstrap that resamples clusters (patients, duplicate groups), never single images. The rule (fixed in
docs/selection.md before it was run):

1. the leader is the candidate with the highest transfer score;
2. a candidate is *not distinguishable* from the leader when the 95 % paired cluster-bootstrap interval of
   (leader - candidate) reaches 0;
3. among those, the one with the fewest options over the paper's recipe is chosen (a tie in options: the higher
   score). An option only wins its place by transferring measurably better.

External test sets (UDIAT) are never read here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.metrics import roc_auc_score

from rcdnet.evaluation.metrics import weighted_auc


@dataclasses.dataclass
class HeldOut:
    """One direction's held-out predictions: labels (N,) 0/1, p(malignant) (N,), and a cluster id per image."""

    y: np.ndarray
    p: np.ndarray
    clusters: np.ndarray

    @property
    def auc(self) -> float:
        return float(roc_auc_score(self.y, self.p))


@dataclasses.dataclass
class Candidate:
    """A configuration: its name, how many options it adds to the paper's recipe, and its held-out predictions
    per direction (e.g. ``"busi->bus-uclm"``)."""

    name: str
    n_options: int
    held_out: dict[str, HeldOut]

    @property
    def score(self) -> float:
        """The transfer score: mean held-out AUC over the directions."""
        return float(np.mean([h.auc for h in self.held_out.values()]))


def cluster_weights(clusters: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, N): how often each image is drawn in each of ``n_boot`` bootstrap samples that draw clusters (every
    image of a drawn cluster comes along, as often as its cluster was drawn)."""
    ids, inverse = np.unique(clusters, return_inverse=True)
    W = np.empty((n_boot, len(clusters)))
    for b in range(n_boot):
        W[b] = np.bincount(rng.integers(len(ids), size=len(ids)), minlength=len(ids))[inverse]
    return W


def bootstrap_differences(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], n_boot: int,
                          seed: int = 0) -> np.ndarray:
    """(n_boot,) draws of the mean over ``pairs`` of AUC(a) - AUC(b). Each pair is one held-out set: labels (N,),
    clusters (N,), and the two candidates' probabilities (Ka, N) and (Kb, N) (one row per seed; AUCs averaged over
    rows). Every draw resamples each set's clusters, the same for both candidates, the sets independently."""
    rng = np.random.default_rng(seed)
    diffs = np.zeros(n_boot)
    for y, clusters, pa, pb in pairs:
        W = cluster_weights(clusters, n_boot, rng)
        auc = lambda P: np.mean([weighted_auc(y, p, W) for p in np.atleast_2d(P)], axis=0)  # noqa: E731
        diffs += np.nan_to_num(auc(pa) - auc(pb), nan=0.0) / len(pairs)  # a one-class draw: no difference
    return diffs


def check_paired(a_name: str, b_name: str, a: dict, b: dict) -> None:
    """Two candidates' held-out sets must be the same sets of the same images (``y`` and ``clusters`` equal)."""
    if set(a) != set(b):
        raise ValueError(f"{a_name} and {b_name} were held out on different sources / directions: "
                         f"{sorted(a)} vs {sorted(b)}")
    for d in sorted(a):
        if not (np.array_equal(a[d].y, b[d].y) and np.array_equal(a[d].clusters, b[d].clusters)):
            raise ValueError(f"{a_name} and {b_name}: {d} was scored on different images")


def paired_difference(a: Candidate, b: Candidate, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(score(a) - score(b), 95 % interval low, high) by a paired cluster bootstrap: in each direction the same
    resampled clusters score both candidates, and the directions are resampled independently."""
    check_paired(a.name, b.name, a.held_out, b.held_out)
    diffs = bootstrap_differences([(a.held_out[d].y, a.held_out[d].clusters, a.held_out[d].p, b.held_out[d].p)
                                   for d in sorted(a.held_out)], n_boot, seed)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return a.score - b.score, float(lo), float(hi)


@dataclasses.dataclass
class Choice:
    chosen: Candidate
    leader: Candidate
    rows: list[dict]  # per candidate: name, score, options, difference from the leader with its interval, eligible


def choose(candidates: list[Candidate], n_boot: int = 2000, seed: int = 0) -> Choice:
    """Apply the rule (module docstring) to ``candidates``."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    leader = max(candidates, key=lambda c: (c.score, -c.n_options))
    rows = []
    for c in candidates:
        if c is leader:
            d, lo, hi = 0.0, 0.0, 0.0
        else:
            d, lo, hi = paired_difference(leader, c, n_boot, seed)
        rows.append({"name": c.name, "score": c.score, "n_options": c.n_options, "behind_leader": d,
                     "ci": (lo, hi), "eligible": lo <= 0.0,
                     **{f"auc {k}": h.auc for k, h in c.held_out.items()}})
    eligible = [c for c, r in zip(candidates, rows) if r["eligible"]]
    chosen = min(eligible, key=lambda c: (c.n_options, -c.score))
    return Choice(chosen, leader, rows)
