"""The main job: prepare data, train, choose operating points on validation, evaluate internally and
externally, write the report. Everything lands in one run directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from rcdnet.config import save_config
from rcdnet.data.prepare import PreparedData, classes_from_config, prepare_training_data
from rcdnet.data.preprocess import preprocess_samples
from rcdnet.data.readers import load_dataset
from rcdnet.data.split import load_split, save_split
from rcdnet.evaluation.calibration import fit_temperature, plot_reliability
from rcdnet.evaluation.evaluate import evaluate_samples
from rcdnet.evaluation.metrics import threshold_for_sensitivity
from rcdnet.evaluation.plots import plot_roc, plot_training_curves
from rcdnet.evaluation.report import environment, write_report
from rcdnet.files import write_csv
from rcdnet.inference import Predictor, load_checkpoint
from rcdnet.training import distributed as dist
from rcdnet.training.checkpoint import save_atomic
from rcdnet.training.trainer import Trainer


class RunDirError(ValueError):
    pass


def open_run(run_dir: Path, cfg: dict, resume: bool, write: bool = True) -> tuple[dict, dict[str, str] | None]:
    """Create or reopen a run directory. A resumed run keeps its saved config and split."""
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
    saved_cfg, split_file = run_dir / "config.yaml", run_dir / "split.csv"
    has_ckpt = (run_dir / "checkpoints" / "last.pt").exists()
    if has_ckpt and not resume:
        raise RunDirError(f"{run_dir}: already holds a training run; pass --resume to continue it or choose another --out")
    if resume and saved_cfg.exists():
        cfg = yaml.safe_load(saved_cfg.read_text())
    if write:
        save_config(cfg, saved_cfg)
    saved_split = {r["key"]: r["split"] for r in load_split(split_file)} if split_file.exists() else None
    return cfg, saved_split


def data_summary(data: PreparedData) -> dict:
    tr, va = data.subset("train")[0], data.subset("val")[0]
    count = lambda ss: ", ".join(f"{c} {sum(s.label == c for s in ss)}" for c in sorted({s.label for s in data.samples}))  # noqa: E731
    groups = {}
    for s in data.samples:
        groups.setdefault(s.group, []).append(s.key)
    multi = [g for g in groups.values() if len(g) > 1]
    pool = {s.key for s in data.samples}
    ext_pairs = [p for p in data.pairs if p.a not in pool and p.b not in pool and not p.a.startswith("busi/")]
    return {
        "training pool": f"{len(data.samples)} images ({count(data.samples)})",
        "train / validation": f"{len(tr)} ({count(tr)}) / {len(va)} ({count(va)}), stratified, no duplicate group across",
        "duplicate groups in the pool": f"{len(multi)} groups holding {sum(map(len, multi))} images",
        "label conflicts left out": f"{len(data.conflicts)} groups: " + "; ".join(
            " = ".join(s.key for s in m) for m in data.conflicts.values()),
        "pool / external-set overlap": f"{len(data.external_overlap)} pairs",
        "duplicate pairs inside external sets": f"{len(ext_pairs)}: " + "; ".join(f"{p.a} = {p.b} ({p.kind})" for p in ext_pairs),
        "files reported as problems": f"{len(data.problems)} (see data_problems.csv)",
    }


def choose_thresholds(predictor: Predictor, val_images: np.ndarray, val_labels: list[str], target: float) -> dict:
    p = predictor.predict_arrays(val_images)[:, predictor.malignant_index]
    y = np.array([int(lab == "malignant") for lab in val_labels])
    return {"default": 0.5, "high_sensitivity": threshold_for_sensitivity(y, p, target)}


def calibrate_on_validation(best_path: Path, data: PreparedData, cfg: dict) -> tuple[Predictor, list, np.ndarray]:
    """Fit the softmax temperature and choose the operating points on the validation split only; store both
    in the best checkpoint. Returns the calibrated predictor and the validation samples and images."""
    ckpt = load_checkpoint(best_path)
    predictor = Predictor(ckpt)
    va_samples, va_images = data.subset("val")
    if cfg["eval"]["temperature_scaling"]:
        y_idx = np.array([predictor.classes.index(s.label) for s in va_samples])
        ckpt["temperature"] = predictor.temperature = fit_temperature(predictor.logits_arrays(va_images), y_idx)
    ckpt["thresholds"] = choose_thresholds(predictor, va_images, [s.label for s in va_samples],
                                           cfg["eval"]["target_sensitivity"])
    ckpt.pop("path", None)
    save_atomic(ckpt, best_path)
    return Predictor(best_path), va_samples, va_images


def dedup_subset(samples: list, pairs: list) -> list:
    """Keep one image of each duplicate group (the first by key)."""
    keys = {s.key for s in samples}
    drop = set()
    for p in sorted(pairs, key=lambda p: (p.a, p.b)):
        if p.a in keys and p.b in keys and p.a not in drop:
            drop.add(p.b)
    return [s for s in samples if s.key not in drop]


def run(cfg: dict, data_root: Path, run_dir: Path, *, limit: int | None = None, resume: bool = False,
        cache_dir: Path | None = None, evaluate: bool = True, progress: bool = True,
        split: dict[str, str] | None = None) -> dict:
    """Train and evaluate into ``run_dir``. ``split`` (key -> train / val) replaces the default 7:3 split of a new
    run (cross-validation folds). Under torchrun, rank 0 prepares the data and caches first, every rank trains,
    and rank 0 alone writes and evaluates."""
    run_dir = Path(run_dir)
    if limit:
        cfg = {**cfg, "data": {**cfg["data"], "limit": limit}}
    ctx = dist.setup(cfg["train"]["device"])
    if not ctx.main:
        dist.barrier(ctx)  # wait for rank 0 to fill the caches and write the run directory
    cfg, saved_split = open_run(run_dir, cfg, resume, write=ctx.main)
    data = prepare_training_data(cfg, data_root, cache_dir=cache_dir, saved_split=saved_split or split,
                                 progress=progress and ctx.main)
    if ctx.main:
        save_split(run_dir / "split.csv", data.samples, data.split)
        write_csv(run_dir / "duplicates.csv", [p.to_row() for p in data.pairs])
        write_csv(run_dir / "data_problems.csv", [{"file": p.path, "problem": p.problem} for p in data.problems])
        dist.barrier(ctx)
    summary = data_summary(data)
    trainer = Trainer(cfg, data, run_dir, progress=progress, cache_dir=cache_dir, ctx=ctx)
    if resume and trainer.resume() and ctx.main:
        print(f"resuming {run_dir} after epoch {trainer.start_epoch}")
    best = trainer.fit()
    dist.barrier(ctx)
    if not ctx.main:
        return {"best": best, "rank": ctx.rank}
    plot_training_curves(trainer.history, run_dir)
    if not evaluate:
        return {"best": best}
    predictor, va_samples, va_images = calibrate_on_validation(run_dir / "checkpoints" / "best.pt", data, cfg)
    n_boot, classes = cfg["eval"]["bootstrap"], classes_from_config(cfg)
    results = {"busi-val": evaluate_samples(predictor, va_samples, "busi-val", run_dir, n_boot, cache_dir,
                                            images=va_images)}
    extra = {}
    for name in cfg["data"].get("external") or []:
        ext, _ = load_dataset(name, data_root, classes=classes)
        ext, ext_images, _ = preprocess_samples(ext, predictor.preprocessor, cache_dir)
        ext_predictor = predictor.adapted(ext_images) if cfg["eval"]["adabn"] else predictor
        results[name] = evaluate_samples(ext_predictor, ext, name, run_dir, n_boot, cache_dir, images=ext_images)
        dedup = dedup_subset(ext, data.pairs)
        if len(dedup) < len(ext):
            keep = {s.key for s in dedup}
            extra[f"{name} without its internal duplicates"] = evaluate_samples(
                ext_predictor, dedup, f"{name}-dedup", run_dir / "sensitivity", n_boot, cache_dir,
                images=ext_images[[s.key in keep for s in ext]])
    plot_reliability({f"{n} (T=1)": (r["_y"], r["_p_raw"]) for n, r in results.items()}
                     | {f"{n} (T={predictor.temperature:.2f})": (r["_y"], r["_p"]) for n, r in results.items()},
                     run_dir / "reliability.png")
    plot_roc({n: (r["_y"], r["_p"], r["operating_points"]["default"]["auc"]["value"],
                  r["operating_points"]["default"]["auc"]["ci"]) for n, r in results.items()},
             run_dir / "roc.png", title="ROC: internal validation and external test")
    env = environment()
    clean = lambda r: {k: v for k, v in r.items() if not k.startswith("_")}  # noqa: E731
    metrics = {"env": env, "best": best, "thresholds": predictor.thresholds, "data": summary,
               "results": {n: clean(r) for n, r in results.items()}, "sensitivity": {n: clean(r) for n, r in extra.items()},
               "timing": {"epochs": len(trainer.history),
                          "total_seconds": round(sum(h["epoch_seconds"] for h in trainer.history), 1),
                          "peak_memory_mb": max(h["peak_memory_mb"] for h in trainer.history)}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    write_report(run_dir / "report.md", cfg=cfg, env=env, data_summary=summary, history=trainer.history, best=best,
                 thresholds=predictor.thresholds, results=results, extra_results=extra)
    return metrics
