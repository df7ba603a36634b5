"""The typed view of a scored set reads what evaluate writes, and prints a metric as the reports always did."""

import numpy as np

from rcdnet.evaluation.metrics import metrics_with_ci
from rcdnet.evaluation.results import Evaluation, Metric


def test_a_metric_prints_with_its_interval_or_says_undefined():
    assert str(Metric(0.8912, (0.85111, 0.9299))) == "0.891 [0.851, 0.930]"
    assert str(Metric(0.5)) == "0.500" and str(Metric(None)) == "undefined"
    assert Metric.from_dict({"value": 0.7, "ci": [0.6, 0.8]}) == Metric(0.7, (0.6, 0.8))


def test_an_evaluation_reads_every_operating_point_and_source():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    points = {"default": metrics_with_ci(y, p, 0.5, 100), "high_sensitivity": metrics_with_ci(y, p, 0.2, 100)}
    saved = {"dataset": "val", "n": 200, "n_malignant": int(y.sum()), "operating_points": points, "ece": 0.05,
             "ci_resampling": "images", "by_source": {"busi": {"n": 120, "n_malignant": 40, "operating_points": points}}}
    e = Evaluation.from_dict(saved)
    assert e.auc.value == points["default"]["auc"]["value"] and e.auc.ci == tuple(points["default"]["auc"]["ci"])
    assert e.at("high_sensitivity").threshold == 0.2 and e.at("high_sensitivity")["sensitivity"].value > 0.9
    assert e.at().counts == points["default"]["counts"] and e.by_source["busi"].n == 120
    assert set(e.at().metrics) >= {"auc", "accuracy", "sensitivity", "specificity", "f1_macro"}
