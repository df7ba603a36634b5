"""Train for real on a small real subset of two sources (BUSI and BUS-UCLM), then evaluate and predict through the
CLI (CPU, ~1-2 min)."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rcdnet.cli import main
from rcdnet.config import load_config, parse_set
from rcdnet.data.boxes import box_of_mask
from rcdnet.data.decode import read_image, read_mask
from rcdnet.evaluation.report import ROWS
from rcdnet.predict import load_predictor
from rcdnet.predict.points import threshold_for_sensitivity
from rcdnet.pipeline import RunDirError, run
from rcdnet.training.trainer import Trainer
from sklearn.metrics import roc_auc_score
from tests.conftest import BUSI, TEST_SIZE

pytestmark = pytest.mark.slow
FAST = ["--set", "eval.bootstrap=200", "--set", "train.batch_size=16", "--set", TEST_SIZE, "--set", "segment.epochs=2",
        "--set", "segment.image_size=64", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root, cache_dir):
    out = tmp_path_factory.mktemp("run")
    code = main(["train", "--data", str(data_root), "--out", str(out), "--epochs", "1", "--limit", "90",
                 "--cache", str(cache_dir), "--set", "data.sources=[busi, bus-uclm]", "--set",
                 "data.external=[udiat]", "--set", "train.balance_sources=true", *FAST])
    assert code == 0
    return out


def _hs_threshold(predictions) -> float:
    """The high-sensitivity threshold chosen again from a predictions file (target 0.95)."""
    rows = list(csv.DictReader(open(predictions)))
    return threshold_for_sensitivity(np.array([r["label"] == "malignant" for r in rows], int),
                                     np.array([float(r["p_malignant"]) for r in rows]), 0.95)


def assert_tables_equal_metrics(report: str, results: dict) -> None:
    """Every 'ours' cell of the report's results tables is metrics.json's value and interval, as printed."""
    label_key = {label: key for key, label, _ in ROWS}
    checked = 0
    for op in ("default", "high_sensitivity"):
        section = report.split(f"## Results at the `{op}` operating point", 1)[1].split("\n## ", 1)[0]
        first_table = section[section.index("\n| "):].split("\n\n", 1)[0]  # not the per-source table below it
        table = [line.strip("|").split(" | ") for line in first_table.splitlines() if line.startswith("| ")]
        header = [h.strip() for h in table[0]]
        for row in table[1:]:
            for col, cell in zip(header[1:], row[1:]):
                if " (ours" in col:
                    assert col.endswith("in-sample)") == (op == "high_sensitivity" and col.startswith("val "))
                    m = results[col.split(" (ours")[0]]["operating_points"][op][label_key[row[0].strip()]]
                    assert cell.strip() == f"{m['value']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]", (op, row[0], col)
                    checked += 1
    assert checked == 2 * len(ROWS) * len(results)


def test_run_directory_holds_everything(trained):
    for name in ("config.yaml", "split.csv", "duplicates.csv", "history.json", "loss_curve.png", "accuracy_curve.png",
                 "roc.png", "report.md", "metrics.json", "val_predictions.csv", "udiat_predictions.csv",
                 "udiat_roc.png", "udiat_confusion.png", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (trained / name).is_file(), name
    metrics = json.loads((trained / "metrics.json").read_text())
    udiat = metrics["results"]["udiat"]
    assert udiat["n"] == 163 and udiat["n_malignant"] == 54
    assert udiat["ci_resampling"].startswith("groups (157 ")  # UDIAT's 6 duplicate pairs resampled as one case each
    ops = udiat["operating_points"]
    assert set(ops) == {"default", "high_sensitivity"}
    rows = list(csv.DictReader((trained / "udiat_predictions.csv").open()))
    y, p = [r["label"] == "malignant" for r in rows], [float(r["p_malignant"]) for r in rows]
    assert ops["default"]["auc"]["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)  # from its own predictions
    lo, hi = ops["default"]["auc"]["ci"]
    assert lo < ops["default"]["auc"]["value"] < hi
    report = (trained / "report.md").read_text()
    assert_tables_equal_metrics(report, metrics["results"])
    assert "udiat without its internal duplicates" in report and "val with each duplicate group reduced" in report
    before = udiat["external_scorings"]["scored_before"]  # the ledger is shared by the session's runs
    assert f"udiat had been scored {before} times in the ledger" in report and "at least" in report
    assert "source bus-uclm: train" in report and "| val: bus-uclm |" in report


def test_evaluate_and_predict_commands(trained, data_root, cache_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RCDNET_ENGINE", "onnxruntime")  # the default engine (the suite runs PyTorch to save exports)
    monkeypatch.setenv("RCDNET_CACHE", str(tmp_path / "graphs"))
    for name in ("val", "bus-uclm-val"):
        assert main(["evaluate", str(trained), "--dataset", name, "--data", str(data_root), "--out",
                     str(tmp_path), "--bootstrap", "100", "--cache", str(cache_dir)]) == 0
    val_keys = [line.split(",")[0] for line in (trained / "split.csv").read_text().splitlines()[1:]
                if line.endswith(",val")]
    res = json.loads((tmp_path / "val_metrics.json").read_text())
    assert res["n"] == len(val_keys)
    assert res["engine"].startswith("onnxruntime") and len(list((tmp_path / "graphs" / "onnx").iterdir())) == 1
    # the same numbers the training run reported (on PyTorch) for its validation split, pooled and per source: the run's
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
    # the default classifies the region of interest: the box a sonographer marks (here: around the lesion mask)
    image = read_image(BUSI / "benign" / "benign (1).png")
    box = box_of_mask(read_mask((BUSI / "benign" / "benign (1)_mask.png",), image.shape[:2]))
    assert main(["predict", str(trained / "checkpoints" / "best.pt"), str(BUSI / "benign" / "benign (1).png"),
                 str(bad), "--box", ",".join(map(str, box)), "--format", "json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    model = load_predictor(trained / "checkpoints" / "best.pt")  # the same image by hand: decode, crop, classify
    assert model.preprocessor.roi_margin == 0.5
    direct = model.predict_arrays(model.preprocessor(image, box)[None])
    assert len(out["predictions"]) == 1
    assert out["predictions"][0]["p_malignant"] == pytest.approx(direct[0, model.malignant_index], abs=6e-4)
    assert out["errors"][0]["file"].endswith("broken.png")
    assert "1 predicted, 1 skipped" in captured.err


def test_the_run_ships_a_lesion_finder_that_predict_uses_without_a_box(trained, tmp_path, capsys):
    """`rcdnet train` trains the segmenter after the classifier on the same split: an image with no box and no mask
    beside it gets an answer that says which box was used, or "no lesion found"."""
    finder = json.loads((trained / "metrics.json").read_text())["segmenter"]
    assert (trained / "checkpoints" / "segmenter.pt").is_file() and len(finder["history"]) == 2
    assert finder["lesion_images"] > 0 and 0 <= finder["dice"] <= 1 and finder["found"] >= 0.95
    assert "auc_found_box" in finder and "## Lesion finder (validation split)" in (trained / "report.md").read_text()
    images = []
    for name in ("malignant (5).png", "benign (3).png"):  # alone in a folder: no mask beside them
        cls = name.split(" ")[0]
        images.append(tmp_path / name)
        shutil.copy(BUSI / cls / name, images[-1])
    code = main(["predict", str(trained), *map(str, images), "--format", "json"])
    captured = capsys.readouterr()
    out, err = json.loads(captured.out), captured.err
    answered = {Path(r["image"]).name for r in out["predictions"]}
    refused = {Path(e["file"]).name for e in out["errors"]}
    assert answered | refused == {p.name for p in images} and code == (0 if answered else 1)
    assert all(r["box_source"] == "found" and 0 < r["finder_confidence"] <= 1 for r in out["predictions"])
    assert all("no lesion found" in e["problem"] for e in out["errors"]), err
    # explain takes the same path: the heat map of the region around the most confident lesion found
    code = main(["explain", str(trained), *map(str, images), "--out", str(tmp_path / "maps"), "--quiet"])
    rows = list(csv.DictReader((tmp_path / "maps" / "explain.csv").open()))
    assert {Path(r["image"]).name for r in rows} == answered and code == (0 if answered else 1)
    boxes = {(Path(r["image"]).name, r["box"]) for r in out["predictions"]}
    assert all(r["box_source"] == "found" and (Path(r["image"]).name, r["box"]) in boxes and Path(r["heat_map"]).is_file()
               for r in rows)


def test_the_export_carries_the_lesion_finder(trained, data_root, cache_dir, tmp_path, capsys):
    """`rcdnet export` writes <name>.segmenter.onnx beside the classifier (verified against PyTorch); the exported
    model then answers an image alone with the box the run's own finder finds."""
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(trained), "--onnx", str(onnx_path), "--data", str(data_root), "--cache",
                 str(cache_dir), "--verify-images", "8"]) == 0
    assert "model.segmenter.onnx" in capsys.readouterr().out and (tmp_path / "model.segmenter.onnx").is_file()
    image = tmp_path / "malignant (5).png"
    shutil.copy(BUSI / "malignant" / "malignant (5).png", image)
    rows = {}
    for model in (trained, onnx_path):
        code = main(["predict", str(model), str(image), "--format", "json"])
        out = json.loads(capsys.readouterr().out)
        rows[str(model)] = (code, out["predictions"], [e["problem"] for e in out["errors"]])
    (code_pt, pt, err_pt), (code_onnx, ox, err_onnx) = rows.values()
    assert code_pt == code_onnx and len(pt) == len(ox) and [e[:16] for e in err_pt] == [e[:16] for e in err_onnx]
    for a, b in zip(pt, ox):
        assert a["box_source"] == b["box_source"] == "found" and a["box"] == b["box"]
        assert a["p_malignant"] == pytest.approx(b["p_malignant"], abs=1e-3)


def test_the_int8_finder_is_calibrated_on_training_images_and_reports_what_it_changes(trained, data_root, tmp_path):
    from rcdnet.data.sources import load_dataset
    from rcdnet.deploy.finder import export_finder, quantise_finder
    from rcdnet.segment.finder import LesionFinder
    from rcdnet.segment.model import segmenter_onnx_beside

    seg = trained / "checkpoints" / "segmenter.pt"
    finder = LesionFinder.load(seg, engine="pytorch")
    samples = load_dataset("udiat", data_root)[0][:24]  # images this run never trained on
    greys = np.stack([finder.grey(read_image(s.path)) for s in samples])
    fp32 = export_finder(seg, tmp_path / "model.onnx", greys[:4], report=lambda m: None)
    int8 = segmenter_onnx_beside(tmp_path / "model.int8.onnx")
    changes = quantise_finder(fp32, int8, greys[:16], samples[16:], report=lambda m: None)
    q = LesionFinder.load_onnx(int8)  # settings carried over: it loads as the exported finder does
    assert (q.threshold, q.size) == (finder.threshold, finder.size) and int8.stat().st_size < 0.6 * fp32.stat().st_size
    assert set(changes) == {"fp32", "int8"} and {"found", "dice"} <= set(changes["int8"])
    diff = np.abs(q.maps(greys[16:]) - LesionFinder.load_onnx(fp32).maps(greys[16:]))
    assert 0 < np.median(diff) < 0.05  # quantised (not a copy), and close


def test_an_unreadable_validation_image_is_skipped_by_the_finders_export(trained, data_root, cache_dir, tmp_path,
                                                                          capsys, monkeypatch):
    import rcdnet.data.decode as decode

    real, bad = decode.read_image, []

    def read(path, *a, **k):  # the first image read for the finder's check turns out unreadable
        if not bad:
            bad.append(str(path))
            raise decode.ImageReadError(f"{path}: truncated PNG")
        return real(path, *a, **k)

    monkeypatch.setattr(decode, "read_image", read)
    assert main(["export", str(trained), "--onnx", str(tmp_path / "m.onnx"), "--data", str(data_root), "--cache",
                 str(cache_dir), "--verify-images", "4"]) == 0
    out = capsys.readouterr().out
    assert f"skipped {bad[0]}: truncated PNG" in out and "verified on 5 images" in out  # 4 readable + the ramp


def test_existing_run_is_not_overwritten(trained, data_root, cache_dir, capsys):
    assert main(["train", "--data", str(data_root), "--out", str(trained), "--epochs", "1", "--limit", "90",
                 "--cache", str(cache_dir), *FAST]) == 2
    assert "--resume" in capsys.readouterr().err


KILLED = """
import os, signal, sys
from pathlib import Path
import torch
from rcdnet.config import load_config, parse_set
from rcdnet.pipeline import run
from rcdnet.training.trainer import Trainer

mode, data_root, out, cache = sys.argv[1:5]
cfg = load_config(None, parse_set([{size!r}, "train.epochs=2", "train.batch_size=16", "train.members=1"])).updated({{"data": {{"limit": 40}}}})
if mode == "epoch":  # SIGKILL in the middle of the second epoch, after its first batch
    original = Trainer.train_one_epoch
    def dying(self, epoch, bar):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, epoch, bar)
    Trainer.train_one_epoch = dying
else:  # SIGKILL half-way through writing the second epoch's checkpoint
    save = torch.save
    def dying_save(obj, f, *a, **k):
        save(obj, f, *a, **k)
        if str(f).endswith("last.pt.tmp") and obj.get("epoch") == 1:
            data = Path(f).read_bytes()
            Path(f).write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    torch.save = dying_save
run(cfg, Path(data_root), Path(out), cache_dir=Path(cache), evaluate=False, progress=False)
"""


def test_training_killed_by_sigkill_resumes_to_the_same_result(tmp_path, data_root, cache_dir):
    """A real SIGKILL, once in the middle of an epoch and once half-way through writing a checkpoint; --resume then
    finishes each run with the same history as a run never interrupted."""
    import signal
    import subprocess
    import sys

    cfg = load_config(None, parse_set([TEST_SIZE, "train.epochs=2", "train.batch_size=16"]))
    run(cfg.updated({'data': {'limit': 40}}), data_root, tmp_path / "a", cache_dir=cache_dir, evaluate=False,
        progress=False)
    ha = json.loads((tmp_path / "a" / "history.json").read_text())
    assert len(ha) == 2
    for mode in ("epoch", "write"):
        out = tmp_path / mode
        done = subprocess.run([sys.executable, "-c", KILLED.format(size=TEST_SIZE), mode, str(data_root), str(out),
                               str(cache_dir)], capture_output=True, text=True)
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
        assert last["epoch"] == 0  # the finished epoch survived; the torn write did not replace it
        assert (out / "checkpoints" / "last.pt.tmp").exists() == (mode == "write")
        with pytest.raises(RunDirError):
            run(cfg.updated({'data': {'limit': 40}}), data_root, out, cache_dir=cache_dir, evaluate=False,
                progress=False)
        run(cfg.updated({'data': {'limit': 40}}), data_root, out, cache_dir=cache_dir, evaluate=False, progress=False,
            resume=True)
        hb = json.loads((out / "history.json").read_text())
        assert len(hb) == 2, mode
        for ra, rb in zip(ha, hb):
            for k in ("train_loss", "val_loss", "val_acc", "val_auc"):
                assert ra[k] == pytest.approx(rb[k], abs=1e-5), (mode, k)


def test_robustness_and_test_time_options(trained, data_root, cache_dir, tmp_path):
    assert main(["robustness", str(trained), "--shifts", "blur", "gain", "--levels", "2", "--bootstrap", "50",
                 "--data", str(data_root), "--out", str(tmp_path / "rob"), "--cache", str(cache_dir), "--quiet"]) == 0
    res = json.loads((tmp_path / "rob" / "robustness.json").read_text())
    assert [(r["shift"], r["level"]) for r in res["rows"]] == [("none", 0), ("blur", 2), ("gain", 2)]
    base = json.loads((trained / "val_metrics.json").read_text())["operating_points"]["default"]["auc"]["value"]
    assert res["rows"][0]["auc"] == pytest.approx(base, abs=1e-6)  # unshifted = the run's own validation AUC
    # threshold transfer: one threshold, chosen on the unshifted images for the sensitivity target, kept under shifts
    assert len({r["threshold_hs"] for r in res["rows"]}) == 1
    run_hs = json.loads((trained / "val_metrics.json").read_text())["operating_points"]["high_sensitivity"]
    assert res["rows"][0]["threshold_hs"] == pytest.approx(run_hs["threshold"])
    assert res["rows"][0]["sensitivity_hs"] == pytest.approx(run_hs["sensitivity"]["value"])
    assert res["summary"]["worst_moderate_sensitivity_hs"] == min(r["sensitivity_hs"] for r in res["rows"][1:])
    assert "Threshold transfer" in (tmp_path / "rob" / "robustness.md").read_text()
    # the shifted, preprocessed images are cached: a second run reads them back and gets the same rows
    assert list((cache_dir / "shifted").rglob("blur2/*.npy"))
    assert main(["robustness", str(trained), "--shifts", "blur", "gain", "--levels", "2", "--bootstrap", "50",
                 "--data", str(data_root), "--out", str(tmp_path / "rob2"), "--cache", str(cache_dir), "--quiet"]) == 0
    assert json.loads((tmp_path / "rob2" / "robustness.json").read_text())["rows"] == res["rows"]
    assert set(res["overlays"]) == {"val", "udiat"}
    assert (tmp_path / "rob" / "robustness.png").is_file()
    own = json.loads((trained / "val_metrics.json").read_text())
    n_val = own["n"]
    # the run was trained without the mirror average (the default): --tta is another predictor, so its rule-out
    # point is chosen again on the run's validation split, from that variant's own predictions
    assert main(["evaluate", str(trained), "--dataset", "val", "--tta", "--bootstrap", "50", "--data",
                 str(data_root), "--out", str(tmp_path / "tta"), "--cache", str(cache_dir), "--quiet"]) == 0
    tta = json.loads((tmp_path / "tta" / "val_metrics.json").read_text())
    assert tta["tta"] is True and own["tta"] is False and tta["n"] == own["n"]
    assert tta["operating_points"]["high_sensitivity"]["threshold"] == pytest.approx(
        _hs_threshold(tmp_path / "tta" / "val_predictions.csv"), abs=1e-6)
    # AdaBN changes the predictor, so its operating points are chosen again on validation (adapted to it): the
    # sensitivity target then holds on validation, as it does for the unadapted model
    assert main(["evaluate", str(trained), "--dataset", "val", "--adabn", "--bootstrap", "50", "--data",
                 str(data_root), "--out", str(tmp_path / "--adabn"), "--cache", str(cache_dir), "--quiet"]) == 0
    adapted = json.loads((tmp_path / "--adabn" / "val_metrics.json").read_text())
    assert adapted["n"] == n_val
    hs = adapted["operating_points"]["high_sensitivity"]
    assert hs["threshold"] == pytest.approx(_hs_threshold(tmp_path / "--adabn" / "val_predictions.csv"), abs=1e-6)
    assert hs["threshold"] != own["operating_points"]["high_sensitivity"]["threshold"]


def test_every_generalisation_option_trains_end_to_end(tmp_path, data_root, cache_dir):
    cfg = load_config(None, parse_set([TEST_SIZE, "train.epochs=1", "train.batch_size=16", "eval.bootstrap=50",
                                       "augment.ultrasound_variants=2", "train.ema_decay=0.9",
                                       "data.inpaint_overlays=true", "data.letterbox=true", "eval.tta=true",
                                       "eval.adabn=true", "train.localise_weight=0.5",
                                       "data.sources=[busi, bus-uclm]", "data.external=[udiat]",
                                       "segment.epochs=0"]))
    metrics = run(cfg.updated({'data': {'limit': 60}}), data_root, tmp_path, cache_dir=cache_dir, progress=False)
    assert "segmenter" not in metrics and not (tmp_path / "checkpoints" / "segmenter.pt").exists()  # none asked for
    dice = json.loads((tmp_path / "history.json").read_text())[0]["val_dice"]
    assert 0 < dice < 1  # the localisation head trained beside the classifier and was scored on the masks
    assert metrics["results"]["udiat"]["n"] == 163
    assert metrics["results"]["udiat"]["tta"] is True
    # the rule-out threshold is the one chosen on the run's own (mirror-averaged) validation predictions
    assert metrics["thresholds"]["high_sensitivity"] == pytest.approx(_hs_threshold(tmp_path / "val_predictions.csv"),
                                                                      abs=1e-6)
    assert "AdaBN on external sets True" in (tmp_path / "report.md").read_text()


def test_publish_results_copies_the_generated_report(trained, tmp_path, capsys):
    import subprocess

    page = tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    code = main(["publish", str(trained), str(page)])
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=Path(__file__).parent).stdout.strip()
    if dirty:  # a run made from (or a page published from) a tree with local changes is refused, by name
        assert code != 0 and "local changes" in capsys.readouterr().err and not page.exists()
        return
    assert code == 0
    text = page.read_text()
    assert "report rendered again from the run's saved results at commit" in text
    assert text.startswith((trained / "report.md").read_text().split("\n", 1)[0])
    assert "figures/results/roc.png" in text and (page.parent / "figures" / "results" / "roc.png").is_file()
    assert "Resolved configuration" in text


def test_swa_keeps_the_equal_average_of_the_end_of_epoch_weights(tmp_path, data_root, cache_dir, monkeypatch):
    cfg = load_config(None, parse_set([TEST_SIZE, "train.epochs=3", "train.batch_size=16", "train.swa_start=2",
                                       "train.patience=0",
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


def test_patience_stops_a_model_that_stopped_improving_and_a_resume_keeps_it_stopped(tmp_path, data_root, cache_dir,
                                                                                      monkeypatch):
    cfg = load_config(None, parse_set([TEST_SIZE, "train.epochs=6", "train.batch_size=16", "train.patience=2",
                                       "data.limit=60"]))
    validate, trained = Trainer.validate, []

    def flat(self):  # the real validation pass, its logits made equal: the AUC never improves on epoch 1's
        z, y = validate(self)
        return np.zeros_like(z), y

    monkeypatch.setattr(Trainer, "validate", flat)
    original = Trainer.train_one_epoch
    monkeypatch.setattr(Trainer, "train_one_epoch", lambda self, epoch, bar: trained.append(epoch) or
                        original(self, epoch, bar))
    best = run(cfg, data_root, tmp_path, cache_dir=cache_dir, evaluate=False, progress=False)["best"]
    history = json.loads((tmp_path / "history.json").read_text())
    assert trained == [0, 1, 2] and best["epoch"] == 1  # epochs 2 and 3 without improvement: stopped, not 6 epochs
    assert [h["best_epoch"] for h in history] == [1, 1, 1]
    run(cfg, data_root, tmp_path, cache_dir=cache_dir, evaluate=False, progress=False, resume=True)
    assert trained == [0, 1, 2]  # resuming a stopped model trains nothing more
    assert torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["epoch"] == 0


def test_operating_points_and_temperature_ignore_the_external_labels(trained, data_root, cache_dir, tmp_path,
                                                                    monkeypatch):
    """Evaluating the same trained run against UDIAT with its labels permuted changes UDIAT's AUC, and nothing that
    was chosen: the thresholds and the temperature come from the validation split alone."""
    import dataclasses

    from rcdnet import pipeline
    from rcdnet.data.prepare import prepare_training_data
    from rcdnet.data.split import load_split

    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    cfg = load_config(run_dir / "config.yaml").updated({"eval": {"bootstrap": 20}})
    data = prepare_training_data(cfg, data_root, cache_dir=cache_dir, progress=False,
                                 saved_split={r["key"]: r["split"] for r in load_split(run_dir / "split.csv")})
    original = pipeline.load_dataset

    def permuted(name, root, classes):
        samples, problems = original(name, root, classes=classes)
        labels = np.random.default_rng(1).permutation([s.label for s in samples])
        return [dataclasses.replace(s, label=str(lab)) for s, lab in zip(samples, labels)], problems

    monkeypatch.setattr(pipeline, "load_dataset", permuted)
    predictor, results, _ = pipeline.evaluate_run(cfg, data, data_root, run_dir, cache_dir)
    ours = json.loads((trained / "metrics.json").read_text())
    assert predictor.thresholds == pytest.approx(ours["thresholds"])
    assert predictor.temperature == pytest.approx(ours["results"]["val"]["temperature"])
    assert results["udiat"].auc.value != pytest.approx(
        ours["results"]["udiat"]["operating_points"]["default"]["auc"]["value"], abs=1e-3)


def test_model_card_is_generated_from_the_run(trained, data_root, tmp_path):
    assert main(["card", str(trained), "--out", str(tmp_path / "card.md"), "--data", str(data_root)]) == 0
    card = (tmp_path / "card.md").read_text()
    metrics = json.loads((trained / "metrics.json").read_text())
    assert "not a medical device" in card and "## Before use at a new site" in card
    udiat = metrics["results"]["udiat"]["operating_points"]["high_sensitivity"]
    assert f"caught {udiat['sensitivity']['value']:.2f} of udiat's cancers" in card  # rule-out stated with it
    diagnoses = card.split("### udiat by diagnosis", 1)[1].split("###", 1)[0]
    rows = [line.split(" | ") for line in diagnoses.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert {"| IDC", "| CYST"} <= {r[0] for r in rows}
    assert sum(int(r[2]) for r in rows) == 163  # every UDIAT image in exactly one diagnosis row
    assert "| busi | Baheya Hospital" in card and "| bus-uclm | Ciudad Real" in card
    assert "CT_small.dcm" in card and "### val per source" in card


def test_adapt_re_estimates_batch_norm_on_a_hospitals_images_and_writes_a_model_the_commands_take(
        trained, data_root, cache_dir, tmp_path, capsys):
    """`rcdnet adapt` (step 15 of docs/loso.md): AdaBN on a new hospital's lesion images (their masks beside them give
    the boxes; no label is read), operating points chosen again on the run's validation split, the finder copied
    beside; an unreadable file is skipped by name; too few images, or an adapted model adapted again, are refused."""
    site = tmp_path / "site"
    site.mkdir()
    for i in range(1, 7):
        for suffix in ("", "_mask"):
            shutil.copyfile(BUSI / "malignant" / f"malignant ({i}){suffix}.png", site / f"case{i}{suffix}.png")
    (site / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    args = ["--data", str(data_root), "--cache", str(cache_dir), "--quiet", "--out", str(tmp_path / "adapted")]
    assert main(["adapt", str(trained), str(site), "--min-images", "7", *args]) == 2
    assert "6 lesion images could be used" in capsys.readouterr().err
    nowhere = ["--data", str(tmp_path / "no-data"), *args[2:]]  # the validation split chooses the thresholds
    (tmp_path / "no-data").mkdir()
    assert main(["adapt", str(trained), str(site), "--min-images", "4", *nowhere]) == 2
    assert "--data must reach its training data" in capsys.readouterr().err
    assert main(["adapt", str(trained), str(site), "--min-images", "4", *args]) == 0
    out, err = capsys.readouterr()
    assert "broken.png" in err and "adapted on 6 lesion images from 6 files (1 skipped)" in out
    f = tmp_path / "adapted" / "best.adabn.pt"
    new = torch.load(f, weights_only=True)
    old = torch.load(trained / "checkpoints" / "best.pt", weights_only=True)
    stats = [k for k in old["model"] if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert any(not torch.equal(new["model"][k], old["model"][k]) for k in stats)
    assert all(torch.equal(new["model"][k], v) for k, v in old["model"].items() if k not in stats)  # weights as trained
    record = new["site_adaptation"]
    assert record["n_images"] == 6 and record["original_thresholds"] == old["thresholds"]
    assert set(new["thresholds"]) == {"default", "high_sensitivity"} and (tmp_path / "adapted" / "segmenter.pt").is_file()
    assert main(["predict", str(f), str(site / "case1.png")]) == 0  # the mask beside it gives the box
    assert "case1.png" in capsys.readouterr().out
    assert main(["adapt", str(f), str(site), "--min-images", "4", *args]) == 2
    assert "already carries an adaptation" in capsys.readouterr().err
