"""Operating points as one frozen type: chosen, stored, read back, decided at; a predictor copied with new ones."""

import dataclasses

import numpy as np
import pytest

from rcdnet.predict import load_predictor
from rcdnet.predict.points import OperatingPoints


def test_choose_store_read_and_decide(rng):
    y = rng.integers(0, 2, 500)
    p = np.clip(y * 0.3 + rng.random(500) * 0.7, 0, 1)
    points = OperatingPoints.choose(y, p, 0.95)
    assert points.default == 0.5 and np.mean(p[y == 1] >= points.high_sensitivity) >= 0.95
    assert OperatingPoints.from_dict(points.to_dict()) == points
    assert list(points.to_dict()) == ["default", "high_sensitivity"]
    assert OperatingPoints.from_dict(None).to_dict() == {"default": 0.5}  # an old checkpoint: p >= 0.5 only
    assert points.decide(0.6) == {"default": True, "high_sensitivity": 0.6 >= points.high_sensitivity}
    with pytest.raises(dataclasses.FrozenInstanceError):
        points.default = 0.3
    for bad in ({"rule_out": 0.1}, {"default": "high"}, {"default": True}):
        with pytest.raises(ValueError, match="thresholds must map the operating points default / high_sensitivity to numbers"):
            OperatingPoints.from_dict(bad)


def test_a_predictor_with_new_points_is_a_copy(untrained_checkpoint):
    predictor = load_predictor(untrained_checkpoint)
    before = dict(predictor.thresholds)
    other = predictor.with_thresholds(OperatingPoints(0.5, 0.1))
    assert other.thresholds == {"default": 0.5, "high_sensitivity": 0.1} and predictor.thresholds == before
    assert other.model is predictor.model  # the same network, not retrained or reloaded
