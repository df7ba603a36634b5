"""DeLong's test against pROC's published aSAH example (``roc.test(roc(outcome, wfns), roc(outcome, s100b))``:
AUCs 0.8237 and 0.7314, Z = 2.209, p-value = 0.02718, 95 % CI of the difference 0.0104 to 0.1742; DeLong
variance of the wfns AUC 0.00146991470882363, pROC's test suite)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from rcdnet.evaluation.delong import delong_covariance, delong_test, holm


@pytest.fixture(scope="module")
def asah() -> dict[str, np.ndarray]:
    with open(Path(__file__).parent / "data" / "asah.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 113
    return {"y": np.array([r["outcome"] == "Poor" for r in rows], int),
            **{k: np.array([float(r[k]) for r in rows]) for k in ("wfns", "s100b", "ndka")}}


def test_matches_proc_published_example(asah):
    r = delong_test(asah["y"], asah["wfns"], asah["s100b"])
    assert r.auc_a == pytest.approx(0.8236789, abs=5e-7)
    assert r.auc_b == pytest.approx(0.7313686, abs=5e-7)
    assert r.z == pytest.approx(2.209, abs=5e-4)
    assert r.p_value == pytest.approx(0.02718, abs=5e-6)
    assert r.ci == pytest.approx((0.01040618, 0.17421442), abs=5e-8)


def test_variance_matches_proc(asah):
    aucs, cov = delong_covariance(asah["y"], asah["wfns"], asah["ndka"], asah["s100b"])
    assert np.diag(cov) == pytest.approx([0.00146991470882363, 0.0031908105493913, 0.00266868245717244], rel=1e-9)
    assert cov[0, 1] == pytest.approx(-0.000532967856762438, rel=1e-9)
    assert aucs[0] == pytest.approx(roc_auc_score(asah["y"], asah["wfns"]))


def test_identical_scores_are_not_different(asah):
    r = delong_test(asah["y"], asah["s100b"], asah["s100b"])
    assert r.difference == 0 and r.p_value == 1.0


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match="both classes"):
        delong_test(np.zeros(5), np.arange(5.0), np.arange(5.0))


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_clustered_delong_is_delong_for_single_cases_and_counts_copies_once(rng):
    """Obuchowski's clustered form: with groups of one it is DeLong's covariance exactly; every case copied twice
    (a duplicate pair per case) leaves its standard error where it was, while the unclustered test shrinks it by
    about 1/sqrt(2), as if the copies were new patients."""
    from rcdnet.evaluation.delong import delong_covariance, delong_test

    n = 150
    y = rng.integers(0, 2, n)
    a, b = y + rng.normal(0, 1, n), y + rng.normal(0, 1.4, n)
    plain, single = delong_covariance(y, a, b)[1], delong_covariance(y, a, b, groups=np.arange(n))[1]
    assert np.allclose(plain, single, rtol=1e-12, atol=0)
    twice = [np.repeat(v, 2) for v in (y, a, b)]
    se = delong_test(y, a, b).se
    assert delong_test(*twice, groups=np.repeat(np.arange(n), 2)).se == pytest.approx(se, rel=1e-9)
    assert delong_test(*twice).se == pytest.approx(se / np.sqrt(2), rel=0.05)
