"""``rcdnet cv``: group-aware, stratified k-fold cross-validation on the training pool, and the fold ensemble.

    out/fold{k}/          a complete training run whose validation split is fold k (resumable like any run)
    out/folds.csv         key, label, group, fold for every image
    out/oof_predictions.csv  every image's probability from the model that never saw it
    out/cv_metrics.json   per-fold and pooled out-of-fold metrics with 95% bootstrap CIs
    out/ensemble.json     the k fold models as one (mean probability); operating points chosen on the pooled
                          out-of-fold predictions; ``predict``, ``evaluate`` and ``serve`` accept ``out/``
    out/cv.md             the summary, with the ensemble on each external set (evaluated once, at the end)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from rcdnet.config import RunConfig
from rcdnet.data.inputs import VALIDATION
from rcdnet.data.prepare import prepare_training_data
from rcdnet.data.sources import load_dataset
from rcdnet.data.split import group_folds
from rcdnet.evaluation.evaluate import evaluate_samples
from rcdnet.evaluation.metrics import metrics_with_ci
from rcdnet.evaluation.results import Evaluation, Metric
from rcdnet.predict.points import OperatingPoints
from rcdnet.files import markdown_table, write_csv, write_json
from rcdnet.pipeline import run
from rcdnet.predict.ensemble import ENSEMBLE_FILE, ENSEMBLE_FORMAT, EnsemblePredictor
from rcdnet.runtime import environment
from rcdnet.training import distributed as dist

FOLD_METRICS = ("auc", "accuracy", "sensitivity", "specificity", "f1_macro")


def fold_splits(keys_labels_groups: list[tuple[str, str, str]], k: int, seed: int) -> list[dict[str, str]]:
    """k (key -> train / val) splits from group-aware stratified folds."""
    folds = group_folds([x[1] for x in keys_labels_groups], [x[2] for x in keys_labels_groups], k, seed)
    return [{key: ("val" if f == i else "train") for (key, _, _), f in zip(keys_labels_groups, folds)}
            for i in range(k)]


def cross_validate(cfg: RunConfig, data_root: Path, out: Path, folds: int = 5, *, cache_dir: Path | None = None,
                   progress: bool = True) -> dict | None:
    """Train ``folds`` runs (finished folds are kept, interrupted ones resume), then pool and ensemble.
    Returns the summary on rank 0 (None on other ranks)."""
    out = Path(out)
    base = cfg.updated({"data": {"external": []}})  # folds are judged on their own validation fold only
    ctx = dist.setup(cfg.train.device)
    if not ctx.main:
        dist.barrier(ctx)  # rank 0 fills the caches first
    data = prepare_training_data(base, data_root, cache_dir=cache_dir, progress=progress and ctx.main)
    klg = [(s.key, f"{s.source}/{s.label}", s.group) for s in data.samples]  # stratified by source and class
    splits = fold_splits(klg, folds, cfg.seed)
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "folds.csv", [{"key": key, "label": label.split("/")[-1], "group": group,
                                       "fold": next(i for i, sp in enumerate(splits) if sp[key] == "val")}
                                      for key, label, group in klg])
        dist.barrier(ctx)
    per_fold = []
    for i, split in enumerate(splits):
        fold_dir = out / f"fold{i}"
        if (fold_dir / "metrics.json").is_file():
            if ctx.main:
                print(f"fold {i}: finished earlier, kept")
        else:
            if ctx.main:
                print(f"fold {i + 1}/{folds}: {sum(v == 'val' for v in split.values())} validation images")
            resume = (fold_dir / "checkpoints" / "last.pt").is_file()
            run(base, data_root, fold_dir, resume=resume, cache_dir=cache_dir, progress=progress, split=split)
        per_fold.append(fold_dir)
    if not ctx.main:
        return None
    return summarise(cfg, data_root, out, per_fold, cache_dir)


def _read_oof(fold_dirs: list[Path]) -> list[dict]:
    rows = []
    for i, d in enumerate(fold_dirs):
        with open(d / f"{VALIDATION}_predictions.csv", newline="") as fh:
            rows += [{**r, "fold": i} for r in csv.DictReader(fh)]
    return rows


def summarise(cfg: RunConfig, data_root: Path, out: Path, fold_dirs: list[Path], cache_dir: Path | None) -> dict:
    """Pooled out-of-fold metrics, the ensemble file, and the ensemble on the external sets."""
    n_boot = cfg.eval.bootstrap
    oof = _read_oof(fold_dirs)
    fields = ["key", "label", "fold", "p_malignant"]
    write_csv(out / "oof_predictions.csv", [{k: r[k] for k in fields} for r in oof], fields)
    y = np.array([r["label"] == "malignant" for r in oof], int)
    p = np.array([float(r["p_malignant"]) for r in oof])
    thresholds = OperatingPoints.choose(y, p, cfg.eval.target_sensitivity).to_dict()
    pooled = {op: metrics_with_ci(y, p, t, n_boot) for op, t in thresholds.items()}
    fold_rows = []
    for i, d in enumerate(fold_dirs):
        res = Evaluation.from_dict(json.loads((d / "metrics.json").read_text())["results"][VALIDATION]).at()
        fold_rows.append({"fold": i, "n": res.counts["n"], **{m: res[m].value for m in FOLD_METRICS}})
    (out / ENSEMBLE_FILE).write_text(json.dumps({
        "format": ENSEMBLE_FORMAT, "members": [str(d.relative_to(out) / "checkpoints" / "best.pt")
                                                   for d in fold_dirs],
        "thresholds": thresholds, "thresholds_chosen_on": "pooled out-of-fold predictions (training pool only)"},
        indent=1))
    ensemble = EnsemblePredictor(out)
    external = {}
    for name in cfg.data.external:
        samples, _ = load_dataset(name, data_root, classes=tuple(ensemble.classes))
        res = evaluate_samples(ensemble, samples, f"ensemble-{name}", out, n_boot, cache_dir, ledger=True)
        external[name] = res.record
    summary = {"env": environment(), "folds": fold_rows, "pooled_oof": pooled, "n_oof": len(oof),
               "fold_mean": {m: float(np.mean([r[m] for r in fold_rows])) for m in FOLD_METRICS},
               "fold_std": {m: float(np.std([r[m] for r in fold_rows], ddof=1)) if len(fold_rows) > 1 else 0.0
                            for m in FOLD_METRICS},
               "ensemble_external": external}
    write_json(out / "cv_metrics.json", summary)
    (out / "cv.md").write_text(markdown(summary))
    return summary


def _ci(m: dict) -> str:
    return str(Metric.from_dict(m))


def markdown(s: dict) -> str:
    env = s["env"]
    rows = [[r["fold"], r["n"]] + [f"{r[m]:.3f}" for m in FOLD_METRICS] for r in s["folds"]]
    rows.append(["mean ± sd", ""] + [f"{s['fold_mean'][m]:.3f} ± {s['fold_std'][m]:.3f}" for m in FOLD_METRICS])
    lines = [f"# {len(s['folds'])}-fold cross-validation", "",
             f"commit `{env['commit']}`, {env['date']}, {env['hardware']}", "",
             *markdown_table(["fold", "n", *FOLD_METRICS], rows)]
    d = s["pooled_oof"]["default"]
    lines += ["", f"Pooled out-of-fold ({s['n_oof']} images, each predicted by the fold model that never saw it), "
              "p >= 0.5, 95% bootstrap CIs:", "",
              *(f"- {m}: {_ci(d[m])}" for m in FOLD_METRICS)]
    for name, r in s["ensemble_external"].items():
        lines += ["", f"Fold ensemble (mean probability of the {len(s['folds'])} fold models) on {name}, n={r['n']}:", ""]
        for op, m in Evaluation.from_dict(r, name).points.items():
            lines.append(f"- @{op} (p >= {m.threshold:.3f}): AUC {m['auc']}, accuracy {m['accuracy']}, "
                         f"sensitivity {m['sensitivity']}, specificity {m['specificity']}")
    return "\n".join(lines) + "\n"
