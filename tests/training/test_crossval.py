"""Group-aware stratified folds on real BUSI data, and ``rcdnet cv`` end to end on a small subset."""

import json
from collections import Counter

import numpy as np
import pytest

from rcdnet.cli import main
from rcdnet.config import load_config
from rcdnet.crossval import fold_splits
from rcdnet.data.boxes import box_of_mask
from rcdnet.data.decode import read_image, read_mask
from rcdnet.data.prepare import prepare_training_data
from rcdnet.predict.ensemble import EnsemblePredictor
from tests.conftest import TEST_SIZE


def test_folds_are_disjoint_stratified_and_keep_groups(data_root, cache_dir):
    # folds need the samples and their groups only: small images without shifted copies keep preprocessing cheap
    cfg = load_config(None, {"data": {"external": [], "limit": 200, "image_size": 64},
                             "augment": {"ultrasound_variants": 0}})
    data = prepare_training_data(cfg, data_root, cache_dir=cache_dir, progress=False)
    klg = [(s.key, s.label, s.group) for s in data.samples]
    splits = fold_splits(klg, 5, seed=0)
    val_sets = [{k for k, v in sp.items() if v == "val"} for sp in splits]
    assert sum(map(len, val_sets)) == len(klg) and set().union(*val_sets) == {k for k, _, _ in klg}  # disjoint
    overall = Counter(lab for _, lab, _ in klg)
    for vs in val_sets:
        share = Counter(lab for k, lab, _ in klg if k in vs)
        for lab, n in overall.items():  # every fold holds about a fifth of each class
            assert abs(share[lab] - n / 5) <= max(3, 0.25 * n / 5), (lab, share[lab], n)
    fold_of = {k: i for i, vs in enumerate(val_sets) for k in vs}
    by_group: dict[str, set] = {}
    for k, _, g in klg:
        by_group.setdefault(g, set()).add(fold_of[k])
    assert all(len(f) == 1 for f in by_group.values())
    assert any(len([k for k, _, g2 in klg if g2 == g]) > 1 for g in by_group)  # real duplicate groups exist


@pytest.mark.slow
def test_cv_command_trains_folds_pools_and_ensembles(tmp_path, data_root, cache_dir, capsys):
    out = tmp_path / "cv"
    args = ["cv", "--folds", "2", "--limit", "48", "--epochs", "1", "--data", str(data_root), "--out", str(out),
            "--cache", str(cache_dir), "--quiet", "--set", "train.batch_size=16", "--set", "eval.bootstrap=100",
            "--set", "augment.ultrasound_variants=0", "--set", TEST_SIZE, "--set", "segment.epochs=0",  # no finder:
            "--set", "data.sources=[busi, bus-uclm]", "--set", "data.external=[udiat]"]  # test_loso trains folds' ones
    assert main(args) == 0
    summary = json.loads((out / "cv_metrics.json").read_text())
    assert len(summary["folds"]) == 2 and summary["n_oof"] == sum(r["n"] for r in summary["folds"])
    oof = (out / "oof_predictions.csv").read_text().splitlines()
    assert len(oof) - 1 == summary["n_oof"] and len({r.split(",")[0] for r in oof[1:]}) == summary["n_oof"]
    assert summary["ensemble_external"]["udiat"]["n"] == 163
    assert summary["fold_mean"]["auc"] == pytest.approx(np.mean([r["auc"] for r in summary["folds"]]))
    spec = json.loads((out / "ensemble.json").read_text())
    assert len(spec["members"]) == 2 and set(spec["thresholds"]) == {"default", "high_sensitivity"}
    # the ensemble is one model for predict; a second cv call keeps the finished folds
    from tests.conftest import BUSI

    capsys.readouterr()
    box = box_of_mask(read_mask((BUSI / "benign" / "benign (1)_mask.png",)))  # the default classifies the lesion
    assert main(["predict", str(out), str(BUSI / "benign" / "benign (1).png"), "--box", ",".join(map(str, box)),
                 "--format", "json"]) == 0
    pred = json.loads(capsys.readouterr().out)["predictions"][0]
    # the fold ensemble is the mean of its members' calibrated probabilities
    ensemble = EnsemblePredictor(out / "ensemble.json")
    image = ensemble.preprocessor(read_image(BUSI / "benign" / "benign (1).png"), box)[None]
    members = [m.predict_arrays(image)[0, m.malignant_index] for m in ensemble.members]
    assert len({round(float(p), 6) for p in members}) == 2  # two different models
    assert pred["p_malignant"] == pytest.approx(np.mean(members), abs=6e-4)
    assert main(args) == 0
    assert capsys.readouterr().out.count("finished earlier, kept") == 2
    assert np.isfinite(summary["fold_mean"]["auc"])
