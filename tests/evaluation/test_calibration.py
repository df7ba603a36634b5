import numpy as np
import pytest

from rcdnet.evaluation.calibration import expected_calibration_error, fit_temperature


def test_ece_is_zero_for_perfect_calibration_and_large_for_overconfidence(rng):
    p = rng.uniform(0, 1, 20000)
    y = (rng.uniform(0, 1, 20000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, np.where(p > 0.5, 0.999, 0.001)) > 0.15


def test_temperature_scaling_lowers_ece_on_an_overconfident_model(rng):
    n = 4000
    true_logit = rng.normal(0, 1.5, n)
    y = (rng.uniform(0, 1, n) < 1 / (1 + np.exp(-true_logit))).astype(int)
    logits = np.stack([np.zeros(n), 4 * true_logit], 1)  # 4x over-confident
    p_before = 1 / (1 + np.exp(-logits[:, 1]))
    t = fit_temperature(logits, y)
    p_after = 1 / (1 + np.exp(-logits[:, 1] / t))
    assert t == pytest.approx(4, rel=0.15)
    assert expected_calibration_error(y, p_after) < 0.5 * expected_calibration_error(y, p_before)
