"""Train for real on a small real subset of two sources (BUSI and BUS-UCLM), then evaluate and predict through the
CLI (CPU, ~1-2 min)."""

import json
import shutil

import pytest
import torch

from rcdnet.cli import main
from rcdnet.config import load_config, parse_set
from rcdnet.pipeline import RunDirError, run
from rcdnet.training.trainer import Trainer
from tests.conftest import BUSI, TEST_SIZE

pytestmark = pytest.mark.slow
FAST = ["--set", "eval.bootstrap=200", "--set", "train.batch_size=16", "--set", TEST_SIZE, "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root, cache_dir):
    out = tmp_path_factory.mktemp("run")
    code = main(["train", "--data", str(data_root), "--out", str(out), "--epochs", "1", "--limit", "90",
                 "--cache", str(cache_dir), "--set", "data.sources=[busi, bus-uclm]", "--set",
                 "train.balance_sources=true", *FAST])
    assert code == 0
    return out


def test_run_directory_holds_everything(trained):
    for name in ("config.yaml", "split.csv", "duplicates.csv", "history.json", "loss_curve.png", "accuracy_curve.png",
                 "roc.png", "report.md", "metrics.json", "val_predictions.csv", "udiat_predictions.csv",
                 "udiat_roc.png", "udiat_confusion.png", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (trained / name).is_file(), name
    metrics = json.loads((trained / "metrics.json").read_text())
    udiat = metrics["results"]["udiat"]
    assert udiat["n"] == 163 and udiat["n_malignant"] == 54
    ops = udiat["operating_points"]
    assert set(ops) == {"default", "high_sensitivity"}
    assert 0 <= ops["default"]["auc"]["value"] <= 1
    lo, hi = ops["default"]["auc"]["ci"]
    assert lo <= ops["default"]["auc"]["value"] <= hi
    report = (trained / "report.md").read_text()
    assert "0.9866" in report and "commit" in report  # paper's number beside ours
    assert "udiat without its internal duplicates" in report
    assert "source bus-uclm: train" in report and "| val: bus-uclm |" in report


def test_evaluate_and_predict_commands(trained, data_root, cache_dir, tmp_path, capsys):
    for name in ("val", "bus-uclm-val"):
        assert main(["evaluate", str(trained), "--dataset", name, "--data", str(data_root), "--out",
                     str(tmp_path), "--bootstrap", "100", "--cache", str(cache_dir)]) == 0
    val_keys = [line.split(",")[0] for line in (trained / "split.csv").read_text().splitlines()[1:]
                if line.endswith(",val")]
    res = json.loads((tmp_path / "val_metrics.json").read_text())
    assert res["n"] == len(val_keys)
    # the same numbers the training run reported for its validation split, pooled and per source: the run's
    # per-source metrics equal those computed on that source's validation images alone
    ours = json.loads((trained / "val_metrics.json").read_text())
    alone = json.loads((tmp_path / "bus-uclm-val_metrics.json").read_text())
    assert alone["n"] == sum(k.startswith("bus-uclm/") for k in val_keys) == ours["by_source"]["bus-uclm"]["n"]
    for got, want in ((res, ours), (alone, ours["by_source"]["bus-uclm"])):
        for op in ("default", "high_sensitivity"):
            for m in ("auc", "sensitivity", "specificity"):
                assert got["operating_points"][op][m]["value"] == pytest.approx(
                    want["operating_points"][op][m]["value"], abs=1e-6), (op, m)

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    capsys.readouterr()
    assert main(["predict", str(trained / "checkpoints" / "best.pt"), str(BUSI / "benign" / "benign (1).png"),
                 str(bad), "--format", "json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert len(out["predictions"]) == 1 and 0 <= out["predictions"][0]["p_malignant"] <= 1
    assert out["errors"][0]["file"].endswith("broken.png")
    assert "1 predicted, 1 skipped" in captured.err


def test_existing_run_is_not_overwritten(trained, data_root, cache_dir, capsys):
    assert main(["train", "--data", str(data_root), "--out", str(trained), "--epochs", "1", "--limit", "90",
                 "--cache", str(cache_dir), *FAST]) == 2
    assert "--resume" in capsys.readouterr().err


def test_interrupted_training_resumes_to_the_same_result(tmp_path, data_root, cache_dir, monkeypatch):
    cfg = load_config(None, parse_set([TEST_SIZE, "train.epochs=2", "train.batch_size=16"]))
    run(cfg.updated({'data': {'limit': 70}}), data_root, tmp_path / "a", cache_dir=cache_dir, evaluate=False, progress=False)

    original = Trainer.train_one_epoch

    def crash_in_second_epoch(self, epoch, bar):
        if epoch == 1:
            raise KeyboardInterrupt  # as if killed mid-epoch
        return original(self, epoch, bar)

    monkeypatch.setattr(Trainer, "train_one_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(cfg.updated({'data': {'limit': 70}}), data_root, tmp_path / "b", cache_dir=cache_dir, evaluate=False, progress=False)
    last = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 0  # the finished epoch survived the crash
    monkeypatch.setattr(Trainer, "train_one_epoch", original)
    with pytest.raises(RunDirError):
        run(cfg.updated({'data': {'limit': 70}}), data_root, tmp_path / "b", cache_dir=cache_dir, evaluate=False, progress=False)
    run(cfg.updated({'data': {'limit': 70}}), data_root, tmp_path / "b", cache_dir=cache_dir, evaluate=False, progress=False, resume=True)
    ha = json.loads((tmp_path / "a" / "history.json").read_text())
    hb = json.loads((tmp_path / "b" / "history.json").read_text())
    assert len(ha) == len(hb) == 2
    for ra, rb in zip(ha, hb):
        for k in ("train_loss", "val_loss", "val_acc", "val_auc"):
            assert ra[k] == pytest.approx(rb[k], abs=1e-5), k
    shutil.rmtree(tmp_path / "a")


def test_robustness_and_test_time_options(trained, data_root, cache_dir, tmp_path):
    assert main(["robustness", str(trained), "--shifts", "blur", "gain", "--levels", "2", "--bootstrap", "50",
                 "--data", str(data_root), "--out", str(tmp_path / "rob"), "--cache", str(cache_dir), "--quiet"]) == 0
    res = json.loads((tmp_path / "rob" / "robustness.json").read_text())
    assert [(r["shift"], r["level"]) for r in res["rows"]] == [("none", 0), ("blur", 2), ("gain", 2)]
    base = json.loads((trained / "val_metrics.json").read_text())["operating_points"]["default"]["auc"]["value"]
    assert res["rows"][0]["auc"] == pytest.approx(base, abs=1e-6)  # unshifted = the run's own validation AUC
    # threshold transfer: one threshold, chosen on the unshifted images for the sensitivity target, kept under shifts
    assert len({r["threshold_hs"] for r in res["rows"]}) == 1
    assert res["rows"][0]["sensitivity_hs"] >= 0.95
    assert res["summary"]["worst_moderate_sensitivity_hs"] == min(r["sensitivity_hs"] for r in res["rows"][1:])
    assert "Threshold transfer" in (tmp_path / "rob" / "robustness.md").read_text()
    # the shifted, preprocessed images are cached: a second run reads them back and gets the same rows
    assert list((cache_dir / "shifted").rglob("blur2/*.npy"))
    assert main(["robustness", str(trained), "--shifts", "blur", "gain", "--levels", "2", "--bootstrap", "50",
                 "--data", str(data_root), "--out", str(tmp_path / "rob2"), "--cache", str(cache_dir), "--quiet"]) == 0
    assert json.loads((tmp_path / "rob2" / "robustness.json").read_text())["rows"] == res["rows"]
    assert set(res["overlays"]) == {"val", "udiat"}
    assert (tmp_path / "rob" / "robustness.png").is_file()
    for flag in ("--tta", "--adabn"):
        out = tmp_path / flag
        assert main(["evaluate", str(trained), "--dataset", "udiat", flag, "--bootstrap", "50", "--data",
                     str(data_root), "--out", str(out), "--cache", str(cache_dir), "--quiet"]) == 0
        assert json.loads((out / "udiat_metrics.json").read_text())["n"] == 163
    # AdaBN changes the predictor, so its operating points are chosen again on validation (adapted to it): the
    # sensitivity target then holds on validation, as it does for the unadapted model
    assert main(["evaluate", str(trained), "--dataset", "val", "--adabn", "--bootstrap", "50", "--data",
                 str(data_root), "--out", str(tmp_path / "--adabn"), "--cache", str(cache_dir), "--quiet"]) == 0
    hs = json.loads((tmp_path / "--adabn" / "val_metrics.json").read_text())["operating_points"]["high_sensitivity"]
    assert hs["sensitivity"]["value"] >= 0.95
    assert hs["threshold"] != json.loads((trained / "val_metrics.json").read_text())[
        "operating_points"]["high_sensitivity"]["threshold"]


def test_every_generalisation_option_trains_end_to_end(tmp_path, data_root, cache_dir):
    cfg = load_config(None, parse_set([TEST_SIZE, "train.epochs=1", "train.batch_size=16", "eval.bootstrap=50",
                                       "augment.ultrasound_variants=2", "train.ema_decay=0.9",
                                       "data.inpaint_overlays=true", "data.letterbox=true", "eval.tta=true",
                                       "eval.adabn=true", "train.localise_weight=0.5"]))
    metrics = run(cfg.updated({'data': {'limit': 60}}), data_root, tmp_path, cache_dir=cache_dir, progress=False)
    dice = json.loads((tmp_path / "history.json").read_text())[0]["val_dice"]
    assert 0 < dice < 1  # the localisation head trained beside the classifier and was scored on the masks
    assert metrics["results"]["udiat"]["n"] == 163
    assert metrics["results"]["udiat"]["tta"] is True
    assert metrics["thresholds"]["high_sensitivity"] <= 1
    assert "AdaBN on external sets True" in (tmp_path / "report.md").read_text()


def test_publish_results_copies_the_generated_report(trained, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    page = tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    script = Path(__file__).resolve().parents[2] / "scripts" / "publish_results.py"
    subprocess.run([sys.executable, str(script), str(trained), str(page)], check=True, capture_output=True)
    text = page.read_text()
    assert text.startswith((trained / "report.md").read_text().split("\n", 1)[0])
    assert "figures/results/roc.png" in text and (page.parent / "figures" / "results" / "roc.png").is_file()
    assert "Resolved configuration" in text


def test_swa_keeps_the_equal_average_of_the_end_of_epoch_weights(tmp_path, data_root, cache_dir, monkeypatch):
    cfg = load_config(None, parse_set([TEST_SIZE, "train.epochs=3", "train.batch_size=16", "train.swa_start=2",
                                       "train.swa_lr=1e-4", "augment.mixup_alpha=0"]))
    snapshots, original = [], Trainer.train_one_epoch

    def record(self, epoch, bar):
        if epoch == 2 and len(snapshots) == 2:
            raise KeyboardInterrupt  # killed in the last epoch, after averaging has begun
        out = original(self, epoch, bar)
        snapshots.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        return out

    monkeypatch.setattr(Trainer, "train_one_epoch", record)
    with pytest.raises(KeyboardInterrupt):
        run(cfg.updated({'data': {'limit': 60}}), data_root, tmp_path, cache_dir=cache_dir, evaluate=False, progress=False)
    snapshots.append(None)  # the resumed run carries on from the checkpoint, with the average so far
    run(cfg.updated({'data': {'limit': 60}}), data_root, tmp_path, cache_dir=cache_dir, evaluate=False, progress=False, resume=True)
    del snapshots[2]
    kept = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["best"]["epoch"] >= 2  # an average
    history = json.loads((tmp_path / "history.json").read_text())
    assert history[2]["lr"] == pytest.approx(1e-4)  # annealed to swa_lr over 2 epochs
    for key in ("classifier.weight", "cbam.spatial.conv.weight", "backbone.bn2.running_mean"):
        mean = (snapshots[1][key] + snapshots[2][key]) / 2  # epochs 2 and 3 averaged (weights and BN statistics)
        assert torch.allclose(kept[key], mean, atol=1e-6), key
        assert not torch.allclose(snapshots[1][key], snapshots[2][key]), key  # so the average differs from each
    frozen = "backbone.bn1.running_mean"  # stem: frozen, keeps its ImageNet statistics
    assert torch.equal(kept[frozen], snapshots[0][frozen])
