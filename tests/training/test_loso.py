"""``rcdnet cv --by-source`` on tiny real folds: no fold trains on the source it scores, every held-out image is scored,
per-source metrics are those of that source alone, and the summary pools seeds as it says."""

import csv
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from rcdnet.cli import main
from rcdnet.config import load_config, read_saved_config
from rcdnet.data.sources import load_dataset
from rcdnet.evaluation.calibration import expected_calibration_error
from rcdnet.evaluation.held_out import HeldOutScore
from rcdnet.loso import check_sources, fold_config, scored_again, summarise

pytestmark = pytest.mark.slow
SOURCES = ["bus-uclm", "breast", "udiat"]  # the three smallest: three folds of two training sources each


def test_fold_config_leaves_one_named_source_out():
    cfg = load_config(None, {"data": {"sources": ["busi", "bus-uclm", "breast", "udiat"], "external": []}})
    fold = fold_config(cfg, "breast", seed=3)
    assert fold.data.sources == ("busi", "bus-uclm", "udiat") and fold.data.external == ("breast",) and fold.seed == 3
    with pytest.raises(ValueError, match="at least 3 training sources"):
        check_sources(load_config(None, {"data": {"sources": ["busi", "udiat"], "external": []}}))
    with pytest.raises(ValueError, match="named sources"):
        check_sources(load_config(None, {"data": {"sources": ["busi", "udiat", "my.csv"], "external": []}}))


@pytest.fixture(scope="module")
def loso(tmp_path_factory, data_root, cache_dir):
    out = tmp_path_factory.mktemp("loso")
    args = ["cv", "--by-source", "--limit", "30", "--epochs", "1", "--data", str(data_root), "--out", str(out),
            "--cache", str(cache_dir), "--quiet", "--set", f"data.sources=[{', '.join(SOURCES)}]", "--set",
            "data.external=[]", "--set", "data.image_size=64", "--set", "data.denoise_h=0", "--set",
            "train.batch_size=16", "--set", "eval.bootstrap=50", "--set", "segment.epochs=0"]
    # (each fold's finder on its held-out source: test_end_to_end's finder_on_external and the summary test below)
    assert main(args) == 0
    return out, args


def test_no_fold_trains_on_the_source_it_scores(loso, data_root):
    out, _ = loso
    for held in SOURCES:
        fold = out / "seed0" / f"without-{held}"
        split = list(csv.DictReader((fold / "split.csv").open()))
        assert split and {r["source"] for r in split} == set(SOURCES) - {held}
        assert not any(r["key"].startswith(f"{held}/") for r in split)
        saved = read_saved_config(fold / "config.yaml")
        assert saved.data.external == (held,) and held not in saved.data.sources
        scored = list(csv.DictReader((fold / f"{held}_predictions.csv").open()))
        every = {s.key for s in load_dataset(held, data_root)[0]}
        assert {r["key"] for r in scored} <= every and len(scored) >= len(every) - 4  # 4 BUS-UCLM masks do not fit
        ledger = (fold / f"{held}_metrics.json")
        assert "external_scorings" in json.loads(ledger.read_text())


def test_per_source_metrics_are_those_of_that_source_alone(loso):
    out, _ = loso
    summary = json.loads((out / "loso_metrics.json").read_text())
    assert list(summary["sources"]) == SOURCES and summary["seeds"] == [0]
    pooled = list(csv.DictReader((out / "loso_predictions.csv").open()))
    for held in SOURCES:
        rows = [r for r in pooled if r["source"] == held]
        auc = roc_auc_score([r["label"] == "malignant" for r in rows], [float(r["p_malignant"]) for r in rows])
        m = summary["sources"][held]
        assert m["auc"] == pytest.approx(auc) and m["n"] == len(rows)
        fold = json.loads((out / "seed0" / f"without-{held}" / f"{held}_metrics.json").read_text())
        assert fold["operating_points"]["default"]["auc"]["value"] == pytest.approx(auc, abs=1e-3)  # CSV: 6 decimals
        assert m["auc_ci"][0] <= auc <= m["auc_ci"][1] and m["ece"] == pytest.approx(fold["ece"])
        assert m["ensemble_mean_p"] == pytest.approx(np.mean([float(r["p_malignant"]) for r in rows]))
        assert json.loads(json.dumps(HeldOutScore.from_dict(m).to_dict())) == m  # the typed record round-trips
        again = HeldOutScore.from_folds([out / "seed0" / f"without-{held}"], held, n_boot=0)  # from the fold's files
        assert (again.n, again.n_malignant, again.thresholds) == (m["n"], m["n_malignant"], tuple(m["thresholds"]))
        assert again.ensemble_auc == pytest.approx(m["ensemble_auc"]) and again.ece == pytest.approx(m["ece"])
    assert summary["mean_auc"] == pytest.approx(np.mean([summary["sources"][h]["auc"] for h in SOURCES]))
    assert summary["worst_auc"] == min(summary["sources"][h]["auc"] for h in SOURCES)
    page = (out / "loso.md").read_text()
    assert "Leave one source out (3 sources" in page and f"Worst source: **{summary['worst_source']}**" in page
    assert set(summary["out_of_source"]["sources"]) == set(SOURCES) and "Calibration that travels" in page
    assert json.loads((out / "out_of_source_calibration.json").read_text())["method"] == "platt"


def test_seeds_are_averaged_and_finished_folds_kept(loso):
    out, args = loso
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("seed0/*/checkpoints/best.pt")}
    assert len(stamps) == 3 and main(args) == 0  # a second call trains nothing
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("seed0/*/checkpoints/best.pt")}
    for held in SOURCES:  # ... a second seed: the same folds with reversed probabilities
        src, dst = out / "seed0" / f"without-{held}", out / "seed1" / f"without-{held}"
        shutil.copytree(src, dst, dirs_exist_ok=True)
        rows = list(csv.DictReader((dst / f"{held}_predictions.csv").open()))
        for r in rows:
            r["p_malignant"] = f"{1 - float(r['p_malignant']):.6f}"
        with open(dst / f"{held}_predictions.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    cfg = load_config(None, {"data": {"sources": SOURCES, "external": []}, "eval": {"bootstrap": 50}})
    s = summarise(cfg, out, SOURCES, [0, 1])
    for held in SOURCES:
        a0, a1 = s["sources"][held]["auc_per_seed"]
        assert a1 == pytest.approx(1 - a0) and s["sources"][held]["auc"] == pytest.approx(0.5)
        assert s["sources"][held]["ensemble_auc"] == pytest.approx(0.5, abs=0.05)  # p and 1 - p average to 0.5
        assert s["sources"][held]["ensemble_mean_p"] == pytest.approx(0.5, abs=1e-6)
        share = s["sources"][held]["n_malignant"] / s["sources"][held]["n"]
        assert f"| {held} | 0.500 / {share:.3f} |" in (out / "loso.md").read_text()
    assert s["mean_auc_seed_sd"] is not None and len(s["mean_auc_per_seed"]) == 2
    assert len(list(csv.DictReader((out / "loso_predictions.csv").open()))) == 2 * sum(
        s["sources"][h]["n"] for h in SOURCES)


def test_a_fold_is_scored_again_once_by_the_readmes_command(loso, data_root, cache_dir, tmp_path):
    """scripts/loso_tta.py's re-scoring (``rcdnet evaluate FOLD --dataset H --tta``): mirrored probabilities of the
    same images, written once and then kept."""
    out, _ = loso
    fold = out / "seed0" / "without-udiat"
    how = ("--dataset", "udiat", "--tta", "--data", str(data_root), "--cache", str(cache_dir), "--bootstrap", "20")
    again = scored_again(fold, tmp_path / "tta", "udiat_metrics.json", *how)
    plain = {r["key"]: float(r["p_malignant"]) for r in csv.DictReader((fold / "udiat_predictions.csv").open())}
    mirrored = {r["key"]: float(r["p_malignant"]) for r in csv.DictReader((again / "udiat_predictions.csv").open())}
    common = sorted(set(plain) & set(mirrored))
    assert len(common) == len(plain) and any(abs(plain[k] - mirrored[k]) > 1e-4 for k in common)
    assert HeldOutScore.from_folds([again], "udiat", n_boot=0).n == len(mirrored)
    stamp = (again / "udiat_metrics.json").stat().st_mtime_ns
    assert scored_again(fold, tmp_path / "tta", "udiat_metrics.json", *how) == again  # kept: nothing run
    assert (again / "udiat_metrics.json").stat().st_mtime_ns == stamp


def test_the_model_card_carries_the_per_hospital_table(loso):
    from rcdnet.evaluation.card import held_out_hospitals

    out, _ = loso
    summary = json.loads((out / "loso_metrics.json").read_text())
    lines = held_out_hospitals(out)
    for held in SOURCES:
        m = summary["sources"][held]
        assert any(line.startswith(f"- {held} ({m['n']} images") and f"AUC {m['auc']:.3f}" in line for line in lines)
    assert f"worst: {summary['worst_source']}" in lines[-1]
    assert held_out_hospitals(None)[0].startswith("Not measured")


def test_out_of_source_calibration_never_reads_the_held_out_labels():
    from rcdnet.loso import out_of_source_calibration

    rng = np.random.default_rng(0)

    def source(n):  # miscalibrated scores: too confident, and biased towards malignant
        y = rng.integers(0, 2, n)
        z = 3 * (1.2 * (2 * y - 1) + rng.normal(0, 1.2, n)) + 2.5  # and biased towards malignant
        return y, np.stack([1 / (1 + np.exp(-z)), 1 / (1 + np.exp(-(z + rng.normal(0, 0.3, n))))])

    pooled = {k: source(300) for k in ("a", "b", "c")}
    res = out_of_source_calibration(pooled, 0.95)
    for k, (y, P) in pooled.items():
        raw = np.mean([expected_calibration_error(y, p) for p in P])
        assert res["sources"][k]["ece"] < raw / 2  # the other hospitals' map fixes a shared miscalibration
        assert res["sources"][k]["sensitivity"] > 0.85
    flipped = dict(pooled, a=(1 - pooled["a"][0], pooled["a"][1]))  # a's labels changed: a's own fit must not move
    again = out_of_source_calibration(flipped, 0.95)
    assert again["sources"]["a"]["threshold"] == res["sources"]["a"]["threshold"]
    assert again["sources"]["b"]["threshold"] != res["sources"]["b"]["threshold"]
    assert res["all"]["method"] == "platt" and set(res["all"]["thresholds"]) == {"default", "high_sensitivity"}


def test_the_folds_finders_are_summarised_per_held_out_source(tmp_path):
    """Each fold's finder numbers on its held-out source (its run's segmenter_external) are averaged over seeds."""
    from rcdnet.loso import _finder_lines, finder_summary

    folds = []
    for seed, dice in ((0, 0.7), (1, 0.8)):
        d = tmp_path / f"seed{seed}"
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"segmenter_external": {"udiat": {
            "found": 0.9, "box_iou_0.5": 0.8, "dice": dice, "auc_found_box": 0.8, "auc_given_box": 0.82}}}))
        folds.append(d)
    summary = finder_summary(folds, "udiat")
    assert summary["dice"] == pytest.approx(0.75) and "no_lesion_on_normal" not in summary
    assert finder_summary(folds, "busi") is None  # a fold that trained no finder
    page = "\n".join(_finder_lines({"udiat": SimpleNamespace(finder=summary), "busi": SimpleNamespace(finder=None)}))
    assert "The lesion finder on the held-out hospital" in page and "| udiat | 0.900 | 0.800 | 0.750 | – |" in page


def test_a_finished_fold_gets_a_lesion_finder_and_keeps_its_classifier(loso, data_root):
    """The folds above trained no finder (segment.epochs=0); the same command with a finder adds one to each
    finished fold: trained on the fold's own split, scored on its held-out source, the classifier untouched."""
    out, args = loso
    folds = {h: out / "seed0" / f"without-{h}" for h in SOURCES}
    before = {h: ((d / f"{h}_predictions.csv").read_text(), (d / "checkpoints" / "best.pt").stat().st_mtime_ns)
              for h, d in folds.items()}
    with_finder = [a.replace("segment.epochs=0", "segment.epochs=1") for a in args] + ["--set", "segment.image_size=64"]
    assert main(with_finder) == 0
    for held, d in folds.items():
        assert before[held] == ((d / f"{held}_predictions.csv").read_text(),
                                (d / "checkpoints" / "best.pt").stat().st_mtime_ns)
        assert (d / "checkpoints" / "segmenter.pt").is_file() and read_saved_config(d / "config.yaml").segment.epochs == 1
        m = json.loads((d / "metrics.json").read_text())
        val = [r for r in csv.DictReader((d / "split.csv").open()) if r["split"] == "val"]  # no held-out image in it
        assert len(val) - 4 <= m["segmenter"]["lesion_images"] <= len(val)  # the finder's validation: the fold's own
        ext = m["segmenter_external"][held]
        every = load_dataset(held, data_root)[0]
        assert len(every) - 4 <= ext["lesion_images"] <= len(every) and 0 <= ext["dice"] <= 1
        assert {"auc_found_box", "auc_given_box"} <= set(ext)  # the fold's classifier on found and drawn boxes
        per_image = [r for r in csv.DictReader((d / f"{held}_finder.csv").open()) if r["label"] != "normal"]
        assert len(per_image) == ext["lesion_images"]  # every image's numbers, the summary's source
        assert np.mean([float(r["box_iou"]) >= 0.5 for r in per_image]) == pytest.approx(ext["box_iou_0.5"], abs=1e-4)
        assert np.mean([float(r["dice"]) for r in per_image]) == pytest.approx(ext["dice"], abs=1e-3)
    summary = json.loads((out / "loso_metrics.json").read_text())
    assert all("found" in summary["sources"][h]["finder"] for h in SOURCES)
    assert "The lesion finder on the held-out hospital" in (out / "loso.md").read_text()
    stamps = [(d / "checkpoints" / "segmenter.pt").stat().st_mtime_ns for d in folds.values()]
    assert main(with_finder) == 0  # the second time nothing is trained
    assert stamps == [(d / "checkpoints" / "segmenter.pt").stat().st_mtime_ns for d in folds.values()]
