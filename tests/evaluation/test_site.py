"""Site validation: cross-validation that never scores a case with a fit that saw it, chance under permuted labels,
a site-calibrated model file that gives the same probabilities everywhere, and clear errors."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score

from rcdnet.cli import main
from rcdnet.data.decode import read_image
from rcdnet.deploy.site_model import write_site_model
from rcdnet.evaluation.site_validation import cross_validated, validate_site
from rcdnet.predict import load_predictor
from rcdnet.predict.site_calibration import SiteCalibration
from rcdnet.serve.app import create_app
from tests.conftest import BUSI


def _cases(n=150, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    p = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0, 1.2, n) - 1.5)))  # informative, badly calibrated
    return p, y, np.arange(n) // 2  # pairs of images per patient


def test_no_case_is_scored_by_a_fit_that_saw_it():
    p, y, groups = _cases()
    seen = []

    def spy(method, p_fit, y_fit, target):
        seen.append(set(p_fit.tolist()))
        return SiteCalibration("temperature", {"t": 1.0}, {"default": 0.5, "high_sensitivity": 0.5})

    held = cross_validated(p, y, groups, "platt", 0.95, 5, fit=spy)
    assert len(seen) == 5
    for k in range(5):
        scored = set(p[held["fold"] == k].tolist())
        assert scored and not scored & seen[k]
        assert len({g for g in groups[held["fold"] == k]} & {g for g in groups[held["fold"] != k]}) == 0


def test_permuted_labels_give_chance_held_out():
    p, y, groups = _cases()
    rng = np.random.default_rng(1)
    aucs = []
    for _ in range(5):
        y_perm = rng.permutation(y)
        for method in ("platt", "isotonic"):
            aucs.append(roc_auc_score(y_perm, cross_validated(p, y_perm, groups, method, 0.95, 5)["p"]))
    assert 0.4 < np.mean(aucs) < 0.6
    # with the true labels the held-out recalibration keeps the model's ranking and fixes its calibration
    res = validate_site(p, y, groups, original={"default": 0.5, "high_sensitivity": 0.2}, target=0.9, folds=5,
                        n_boot=200)
    assert res.summary["auc"]["value"] > 0.8 and res.summary["ece_after_held_out"] < res.summary["ece_before"]
    assert res.summary["learning_curve"][-1]["fitting_cases"].startswith("all")


def test_too_few_cases_and_models_without_a_validation_record(tmp_path, untrained_checkpoint, small_dataset):
    p, y, groups = _cases(20)
    with pytest.raises(ValueError, match="cases.csv: .* malignant cases in .* patient groups: 10-fold"):
        validate_site(p, y, groups, original={"default": 0.5}, target=0.95, folds=10, where="cases.csv")
    # the untrained checkpoint has no operating points chosen on validation
    assert main(["site-validate", str(untrained_checkpoint), "--folder", str(small_dataset), "--out",
                 str(tmp_path / "sv")]) == 2
    assert main(["site-validate", str(untrained_checkpoint), "--out", str(tmp_path / "sv")]) == 2


@pytest.fixture(scope="module")
def site_model(untrained_checkpoint, tmp_path_factory):
    """The untrained checkpoint with validation thresholds, and a copy carrying a fixed site calibration."""
    d = tmp_path_factory.mktemp("site")
    ckpt = torch.load(untrained_checkpoint, weights_only=True)
    ckpt["thresholds"] = {"default": 0.5, "high_sensitivity": 0.3}
    torch.save(ckpt, d / "model.pt")
    site = SiteCalibration("platt", {"a": 2.0, "b": -1.0}, {"default": 0.5, "high_sensitivity": 0.2},
                           {"n_cases": 12, "cases_file": "local.csv", "target_sensitivity": 0.9})
    return d / "model.pt", write_site_model(d / "model.pt", site, d), site


def test_the_site_model_gives_the_same_probabilities_everywhere(site_model, tmp_path, capsys, exported_onnx):
    original, sited, site = site_model
    image = BUSI / "malignant" / "malignant (3).png"
    base, loaded = load_predictor(original), load_predictor(sited)
    x = base.preprocessor(read_image(image))
    want = site.apply(base.predict_arrays(x[None])[:, 1])[0]
    assert loaded.predict_arrays(x[None])[0, 1] == pytest.approx(want, abs=1e-6)
    assert loaded.thresholds == site.thresholds and "local.csv" in loaded.calibration
    # predict
    assert main(["predict", str(sited), str(image), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["p_malignant"] == pytest.approx(want, abs=1e-4)
    # evaluate
    folder = tmp_path / "cases"
    for cls in ("benign", "malignant"):
        (folder / cls).mkdir(parents=True)
        shutil.copy(BUSI / cls / f"{cls} (3).png", folder / cls)
    assert main(["evaluate", str(sited), "--folder", str(folder), "--out", str(tmp_path / "ev"), "--bootstrap",
                 "20", "--quiet"]) == 0
    rows = list(csv.DictReader((tmp_path / "ev" / "cases_predictions.csv").open()))
    p_eval = float(next(r for r in rows if "malignant (3)" in r["key"])["p_malignant"])
    assert p_eval == pytest.approx(want, abs=1e-5)
    # ONNX: the exported model with the same site calibration
    onnx_sited = write_site_model(exported_onnx, site, tmp_path / "onnx")
    assert load_predictor(onnx_sited).predict_arrays(x[None])[0, 1] == pytest.approx(want, abs=1e-4)
    # the service answers with it, and says which calibration is in force
    client = TestClient(create_app(sited))
    v = client.get("/version").json()
    assert "site calibration (platt) from 12 local cases of local.csv" in v["calibration"] and v["site_cases"] == 12
    r = client.post("/predict", files={"file": ("m.png", image.read_bytes(), "image/png")})
    assert r.json()["p_malignant"] == pytest.approx(want, abs=1e-4)
    assert r.json()["operating_points"]["high_sensitivity"]["threshold"] == 0.2


def test_site_validate_command_end_to_end(site_model, tmp_path, capsys):
    original, _, _ = site_model
    folder = tmp_path / "local"
    for cls in ("benign", "malignant"):
        (folder / cls).mkdir(parents=True)
        for i in range(1, 9):
            shutil.copy(BUSI / cls / f"{cls} ({i}).png", folder / cls)
    assert main(["site-validate", str(original), "--folder", str(folder), "--folds", "3", "--bootstrap", "50",
                 "--out", str(tmp_path / "sv"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "16 local cases (8 malignant)" in out and "held out" in out
    res = json.loads((tmp_path / "sv" / "site_validation.json").read_text())
    assert res["site_calibration"]["provenance"]["n_cases"] == 16 and len(res["site_calibration"]["provenance"][
        "cases_sha256"]) == 64
    sited = load_predictor(res["model_file"])
    assert sited.thresholds == res["site_calibration"]["thresholds"]
    assert (tmp_path / "sv" / "learning_curve.png").is_file() and (tmp_path / "sv" / "reliability.png").is_file()


def test_an_ensemble_carries_a_site_calibration_beside_its_members(site_model):
    from rcdnet.predict.ensemble import ENSEMBLE_FORMAT

    original, _, site = site_model
    spec = original.parent / "ensemble.json"
    spec.write_text(json.dumps({"format": ENSEMBLE_FORMAT, "members": [original.name],
                                "thresholds": {"default": 0.5, "high_sensitivity": 0.3}}))
    sited = write_site_model(spec, site, original.parent / "unused")
    assert sited == original.parent / "ensemble.site.json"  # beside the original: member paths still hold
    base, loaded = load_predictor(spec), load_predictor(sited)
    x = base.preprocessor(read_image(BUSI / "benign" / "benign (3).png"))[None]
    assert loaded.predict_arrays(x)[0, 1] == pytest.approx(site.apply(base.predict_arrays(x)[:, 1])[0], abs=1e-6)
    assert loaded.thresholds == site.thresholds
