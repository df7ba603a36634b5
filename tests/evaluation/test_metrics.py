import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from rcdnet.evaluation.metrics import (
    _vector_metrics,
    binary_metrics,
    bootstrap_ci,
    metrics_with_ci,
)
from rcdnet.predict.points import threshold_for_sensitivity


@pytest.fixture
def scores(rng):
    y = rng.integers(0, 2, 150)
    p = np.clip(0.35 * y + rng.normal(0.35, 0.2, 150), 0, 1).round(2)  # ties on purpose
    return y, p


def test_point_metrics_match_scikit_learn(scores):
    y, p = scores
    m = binary_metrics(y, p, 0.5)
    pred = (p >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))


def test_vectorised_bootstrap_metrics_equal_the_point_metrics(scores):
    y, p = scores
    v = _vector_metrics(y[None], p[None], 0.5)
    m = binary_metrics(y, p, 0.5)
    for k, arr in v.items():
        assert arr[0] == pytest.approx(m[k]), k


def test_confidence_intervals_contain_the_estimate_and_shrink_with_n(rng):
    def make(n):
        y = rng.integers(0, 2, n)
        return y, np.clip(0.3 * y + rng.normal(0.35, 0.2, n), 0, 1)

    small, large = metrics_with_ci(*make(60), n_boot=1000), metrics_with_ci(*make(2000), n_boot=1000)
    for m in ("accuracy", "auc", "sensitivity", "specificity", "f1_macro"):
        lo, hi = small[m]["ci"]
        assert lo <= small[m]["value"] <= hi
        assert (large[m]["ci"][1] - large[m]["ci"][0]) < (hi - lo)


def test_bootstrap_is_seeded(scores):
    assert bootstrap_ci(*scores, n_boot=300, seed=3) == bootstrap_ci(*scores, n_boot=300, seed=3)


def test_high_sensitivity_threshold(scores):
    y, p = scores
    t = threshold_for_sensitivity(y, p, 0.95)
    assert binary_metrics(y, p, t)["sensitivity"] >= 0.95
    just_above = np.nextafter(np.min(p[p >= t]), 2)  # past the lowest score it still calls malignant
    assert binary_metrics(y, p, just_above)["sensitivity"] < 0.95  # so it is as high as it can be
    assert t not in set(p)  # never on a score: rounding in a recomputation cannot flip a case
    # the same probabilities recomputed in float32 (as another code path would) keep the target
    assert binary_metrics(y, p.astype(np.float32), t)["sensitivity"] >= 0.95


def test_bootstrap_of_a_seed_mean():
    from rcdnet.evaluation.metrics import bootstrap_ci, bootstrap_mean_ci

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    p = np.clip(y * 0.3 + rng.random(80) * 0.7, 0, 1)
    same, single = bootstrap_mean_ci(y, np.stack([p, p, p]), n_boot=300), bootstrap_ci(y, p, n_boot=300)
    assert {k: pytest.approx(v, abs=1e-12) for k, v in single.items()} == same
    q = np.clip(p + rng.normal(0, 0.2, 80), 0, 1)
    lo, hi = bootstrap_mean_ci(y, np.stack([p, q]), n_boot=500)["auc"]
    mean_auc = (binary_metrics(y, p)["auc"] + binary_metrics(y, q)["auc"]) / 2
    assert lo < mean_auc < hi


def test_cluster_bootstrap_counts_copies_of_one_case_once():
    from rcdnet.evaluation.metrics import bootstrap_ci

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = np.clip(0.25 * y + 0.75 * rng.random(60), 0, 1)
    copies_y, copies_p, groups = np.repeat(y, 4), np.repeat(p, 4), np.repeat(np.arange(60), 4)
    width = lambda ci: ci["auc"][1] - ci["auc"][0]  # noqa: E731
    unique = width(bootstrap_ci(y, p, n_boot=2000))
    as_images = width(bootstrap_ci(copies_y, copies_p, n_boot=2000))
    as_groups = width(bootstrap_ci(copies_y, copies_p, n_boot=2000, groups=groups))
    # four copies of each case, resampled as images, look like four times the evidence (half the width); resampled
    # as groups they are what they are: 60 cases
    assert as_images < 0.6 * unique
    assert as_groups == pytest.approx(unique, rel=0.15)
    # one image per group is the image bootstrap itself
    by_groups, by_images = bootstrap_ci(y, p, n_boot=500, groups=np.arange(60)), bootstrap_ci(y, p, n_boot=500)
    for k, ci in by_images.items():
        assert by_groups[k] == pytest.approx(ci, abs=1e-9), k
