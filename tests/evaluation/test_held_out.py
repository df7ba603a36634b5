"""The held-out hospital's typed record: what ``loso_metrics.json`` stores and reads back."""

import pytest

from rcdnet.evaluation.held_out import HeldOutScore

OLD = {  # a source of a loso_metrics.json written before `ensemble_mean_p` existed (runs/loso/roi_e10x3, udiat)
    "n": 163, "n_malignant": 54, "clusters": 157, "auc_per_seed": [0.85, 0.88, 0.86], "auc": 0.863,
    "auc_ci": [0.80, 0.92], "auc_seed_sd": 0.015, "ensemble_auc": 0.868, "ensemble_auc_ci": [0.80, 0.93],
    "ece": 0.1, "ece_before_temperature": 0.09, "ensemble_ece": 0.093, "default_sensitivity": 0.5,
    "default_specificity": 0.95, "high_sensitivity_sensitivity": 0.85, "high_sensitivity_specificity": 0.6,
    "thresholds": [{"default": 0.5, "high_sensitivity": 0.1}] * 3}


def test_an_older_record_reads_with_the_missing_field_empty():
    s = HeldOutScore.from_dict(OLD)
    assert s.ensemble_mean_p is None and s.finder is None and s.auc_per_seed == (0.85, 0.88, 0.86)
    assert s.malignant_share == pytest.approx(54 / 163)
    back = s.to_dict()
    assert "finder" not in back and back["ensemble_mean_p"] is None
    assert {k: v for k, v in back.items() if k != "ensemble_mean_p"} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in OLD.items()}


def test_an_unknown_field_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown fields.*aucc"):
        HeldOutScore.from_dict({**OLD, "aucc": 0.9})


def test_folds_that_scored_different_images_are_refused_by_name(tmp_path):
    for seed, keys in ((0, ["a", "b"]), (1, ["a", "c"])):
        d = tmp_path / f"seed{seed}"
        d.mkdir()
        (d / "udiat_predictions.csv").write_text("key,label,group,p_malignant\n" + "".join(
            f"{k},benign,{k},0.2\n" for k in keys))
    with pytest.raises(ValueError, match=r"udiat: the folds .*seed1.* scored different images"):
        HeldOutScore.from_folds([tmp_path / "seed0", tmp_path / "seed1"], "udiat")
