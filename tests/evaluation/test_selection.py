"""The cross-source selection rule on constructed scores: it picks what it says it picks, and the margin holds."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from rcdnet.evaluation.selection import (
    Candidate,
    HeldOut,
    choose,
    cluster_weights,
    paired_difference,
)


def _held_out(rng, n_clusters: int, per_cluster: int, separation: float, noise_seed: int) -> HeldOut:
    """Clustered labels (one label per cluster, as for a patient with one lesion) and scores whose AUC grows with
    ``separation``; the same labels and clusters for every candidate, the score noise from ``noise_seed``."""
    clusters = np.repeat(np.arange(n_clusters), per_cluster)
    y = np.repeat(np.arange(n_clusters) % 3 == 0, per_cluster).astype(int)
    noise = np.random.default_rng(noise_seed).normal(size=len(y))
    return HeldOut(y, separation * y + noise, clusters)


def _candidate(name, n_options, separation, seed, rng=None):
    return Candidate(name, n_options, {d: _held_out(rng, 60, 4, separation, seed + i)
                                       for i, d in enumerate(("a->b", "b->a"))})


def test_the_score_is_the_mean_held_out_auc():
    c = _candidate("x", 0, 1.0, 0)
    aucs = [roc_auc_score(h.y, h.p) for h in c.held_out.values()]
    assert c.score == pytest.approx(np.mean(aucs))


def test_a_clearly_better_candidate_wins_over_simpler_ones():
    paper, strong = _candidate("paper", 0, 0.8, 10), _candidate("strong", 2, 3.0, 20)
    choice = choose([paper, strong], n_boot=200)
    assert choice.leader is strong and choice.chosen is strong
    row = next(r for r in choice.rows if r["name"] == "paper")
    assert row["behind_leader"] > 0 and row["ci"][0] > 0 and not row["eligible"]


def test_a_leader_within_the_noise_loses_to_the_simpler_candidate():
    # same separation, different noise: the leader is ahead by chance only, so the one with fewer options is chosen
    cands = [_candidate("paper", 0, 1.0, 1), _candidate("usaug", 1, 1.0, 2), _candidate("usaug_320+TTA", 3, 1.0, 3)]
    choice = choose(cands, n_boot=200)
    assert choice.chosen.name == "paper"
    assert all(r["eligible"] for r in choice.rows)
    assert choice.leader.score == max(c.score for c in cands)


def test_the_margin_is_a_paired_test_not_a_tie_band():
    # equal quality, independent noise: a lead well above the old 0.001 tie band, inside the noise: not chosen
    paper, rival = _candidate("paper", 0, 1.0, 1), _candidate("rival", 1, 1.0, 4)
    assert rival.score - paper.score > 0.005
    d, lo, hi = paired_difference(rival, paper, n_boot=200)
    assert d == pytest.approx(rival.score - paper.score) and lo < 0 < hi
    assert choose([paper, rival], n_boot=200).chosen is paper
    # a small lead that holds on every cluster (the same images, a consistent gain) is measurable: chosen
    better = Candidate("better", 1, {d: HeldOut(h.y, h.p + 0.1 * h.y * (h.clusters % 2), h.clusters)
                                     for d, h in paper.held_out.items()})
    d, lo, hi = paired_difference(better, paper, n_boot=200)
    assert 0.005 < d < 0.02 and lo > 0
    assert choose([paper, better], n_boot=200).chosen is better


def test_ties_in_options_go_to_the_higher_score():
    a, b = _candidate("a", 1, 1.0, 7), _candidate("b", 1, 1.0, 8)
    choice = choose([a, b], n_boot=200)
    assert choice.chosen is max((a, b), key=lambda c: c.score)


def test_clusters_are_resampled_whole():
    clusters = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 1, 2, 3, 4, 5])
    W = cluster_weights(clusters, 50, np.random.default_rng(0))
    assert W.shape == (50, len(clusters))
    for w in W:  # every draw of a cluster brings all of its images, as often as the cluster was drawn
        for c in np.unique(clusters):
            assert len(set(w[clusters == c])) == 1
        assert sum(w[clusters == c][0] for c in np.unique(clusters)) == 10  # 10 clusters drawn per sample


def test_paired_difference_equals_the_image_level_bootstrap_it_replaces():
    """The weighted AUCs give the same interval as scoring each resample's drawn images with roc_auc_score."""
    from sklearn.metrics import roc_auc_score

    from rcdnet.evaluation.selection import paired_difference

    a, b = _candidate("a", 0, 1.0, 1), _candidate("b", 0, 0.9, 2)
    rng, diffs = np.random.default_rng(0), np.zeros(300)
    for d in sorted(a.held_out):
        ha, hb = a.held_out[d], b.held_out[d]
        for i, w in enumerate(cluster_weights(ha.clusters, 300, rng)):
            idx = np.repeat(np.arange(len(w)), w.astype(int))
            if ha.y[idx].min() < ha.y[idx].max():
                diffs[i] += (roc_auc_score(ha.y[idx], ha.p[idx]) - roc_auc_score(hb.y[idx], hb.p[idx])) / 2
    _, lo, hi = paired_difference(a, b, n_boot=300, seed=0)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-12)


def test_candidates_scored_on_different_images_are_refused():
    a = _candidate("a", 0, 1.0, 1)
    b = Candidate("b", 0, {d: HeldOut(h.y[:-4], h.p[:-4], h.clusters[:-4]) for d, h in a.held_out.items()})
    with pytest.raises(ValueError, match="different images"):
        paired_difference(a, b, n_boot=10)
