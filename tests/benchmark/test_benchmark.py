"""``rcdnet benchmark`` end to end on a tiny real subset: two small models, two seeds, one epoch."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from PIL import Image

from rcdnet.benchmark import load_profile
from rcdnet.benchmark.run import explain_rows
from rcdnet.benchmark.tables import write_tables
from rcdnet.cli import main

pytestmark = pytest.mark.slow

TINY = {
    "name": "tiny", "seeds": [0, 1], "split_seed": 0,
    "config": {"data": {"image_size": 64, "limit": 48, "sources": ["busi"], "external": ["udiat"], "roi_margin": 0},
               "train": {"epochs": 1, "batch_size": 16, "patience": 0},
               "augment": {"ultrasound_variants": 0}, "eval": {"bootstrap": 50}},
    "reference": "rcdnet",
    "comparison": [{"id": "rcdnet", "label": "RcdNet", "set": {"model": {"name": "rcdnet"}}},
                   {"id": "small", "label": "ResNet-10t",
                    "set": {"model": {"name": "timm:resnet10t", "pretrained": False, "freeze_stages": 0}}}],
    "ablation": [{"id": "rcdnet", "label": "+ CBAM (= RcdNet)"},
                 {"id": "rcdnet_no_mixup_ls", "label": "without Mixup and LS",
                  "set": {"augment": {"mixup_alpha": 0, "label_smoothing": 0}}}],
}


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_benchmark_writes_tables_and_resumes(tmp_path, data_root, cache_dir, capsys):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "bench"
    args = ["benchmark", "--profile", str(profile), "--out", str(out), "--data", str(data_root),
            "--cache", str(cache_dir), "--quiet"]
    assert main(args) == 0
    assert "3 rows x 2 seeds = 6 jobs, 0 finished earlier" in capsys.readouterr().out

    t1 = _rows(out / "table1_internal.csv")
    assert [r["row"] for r in t1] == ["rcdnet", "small"]
    assert [r["weights"] for r in t1] == ["ImageNet", "scratch"] and {r["seeds"] for r in t1} == {"2"}
    for table in ("table1_internal.csv", "table2_external.csv"):
        for r in _rows(out / table):
            for metric in ("auc", "accuracy", "f1_macro", "precision_macro", "recall_macro"):
                lo, mean, hi = (float(r[f"{metric}_{s}"]) for s in ("lo", "mean", "hi"))
                assert lo <= mean <= hi, (table, r["row"], metric)
    # the table's mean is the mean of the runs' own metrics
    per_run = [json.loads((out / "jobs" / "small" / f"seed{s}" / "metrics.json").read_text())
               ["results"]["udiat"]["operating_points"]["default"]["auc"]["value"] for s in (0, 1)]
    small = next(r for r in _rows(out / "table2_external.csv") if r["row"] == "small")
    assert float(small["auc_mean"]) == pytest.approx(sum(per_run) / 2, abs=1e-3)  # CSV p rounded to 6 places
    delong = _rows(out / "delong.csv")
    assert {(d["test_set"], d["other"]) for d in delong} == {(t, o) for t in ("val", "udiat")
                                                              for o in ("small", "rcdnet_no_mixup_ls")}
    for t in ("val", "udiat"):  # Holm over the two comparisons on one test set: 2 x the smaller p, then monotone
        lo, hi = sorted(float(d["p"]) for d in delong if d["test_set"] == t)
        assert sorted(float(d["p_holm"]) for d in delong if d["test_set"] == t) == pytest.approx(
            [min(1.0, 2 * lo), max(min(1.0, 2 * lo), hi)], abs=1e-6)
    assert [r["row"] for r in _rows(out / "ablation.csv")] == ["rcdnet", "rcdnet_no_mixup_ls"]
    eff = {r["row"]: r for r in _rows(out / "efficiency.csv")}
    assert float(eff["small"]["params_m"]) == pytest.approx(4.9, abs=0.2)  # resnet10t with 2 classes
    assert float(eff["rcdnet"]["gflops_224"]) > float(eff["rcdnet"]["gflops"]) > 0  # 224 vs the run's 64 px
    with Image.open(out / "roc.png") as im:
        assert im.width > im.height  # two panels: internal and external
    md = (out / "benchmark.md").read_text()
    for part in ("Table 1: internal validation", "Table 2: external test", "DeLong", "Ablation", "ResNeXt"):
        assert part in md

    # finished jobs are never reused for other settings
    assert main(args + ["--set", "train.lr=0.01"]) == 2
    assert "rcdnet/seed0: train.lr 0.001 -> 0.01" in capsys.readouterr().err
    # a job trained before a setting existed: read with that setting's default (the old behaviour), so unchanged
    # while the profile leaves the setting at its default
    saved = out / "jobs" / "rcdnet" / "seed0" / "config.yaml"
    old_cfg = yaml.safe_load(saved.read_text())
    del old_cfg["train"]["swa_start"]
    saved.write_text(yaml.safe_dump(old_cfg))
    assert main(args + ["--set", "train.swa_start=1", "--set", "train.patience=0"]) == 2  # SWA runs every epoch
    assert "rcdnet/seed0: train.swa_start 0 -> 1" in capsys.readouterr().err

    # an interrupted job: its checkpoint is there, its results are not; finished jobs are left alone
    job = out / "jobs" / "small" / "seed1"
    (job / "metrics.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (out / "jobs").glob("*/seed*/metrics.json")}
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "6 jobs, 5 finished earlier" in text and "[1/1] small/seed1" in text
    assert "resuming" in (job / "train.log").read_text()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept

    # heat maps of each comparison row against the lesion masks (--explain), on 8 masked images per set
    prof = load_profile(str(profile))
    heat = explain_rows(prof, out, data_root, limit=8)
    assert [r for r in heat] == ["rcdnet", "small"]
    assert {(r["dataset"], r["method"], r["n"]) for r in heat["small"]} >= {("val", "gradcam", 8),
                                                                           ("udiat", "gradcam++", 8)}
    write_tables(prof, out, json.loads((out / "efficiency.json").read_text()), heat, n_boot=50)
    md = (out / "benchmark.md").read_text()
    assert "Heat maps against the radiologists' lesion masks" in md and "| ResNet-10t | udiat | gradcam |" in md
