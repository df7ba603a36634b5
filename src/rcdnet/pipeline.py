"""The main job: prepare data, train, choose operating points on validation, evaluate internally and
externally, write the report. Everything lands in one run directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from rcdnet import runtime
from rcdnet.config import RunConfig, read_saved_config, save_config
from rcdnet.data.duplicates import with_duplicate_groups
from rcdnet.data.inputs import VALIDATION
from rcdnet.data.prepare import PreparedData, prepare_training_data
from rcdnet.data.preprocess import preprocess_samples
from rcdnet.data.sources import load_dataset
from rcdnet.data.split import load_split, save_split
from rcdnet.evaluation.calibration import fit_temperature, plot_reliability
from rcdnet.evaluation.evaluate import evaluate_samples
from rcdnet.evaluation.plots import plot_roc, plot_training_curves
from rcdnet.evaluation.report import data_summary, write_report
from rcdnet.runtime import environment
from rcdnet.evaluation.thresholds import choose_thresholds
from rcdnet.files import writable_dir, write_csv, write_json
from rcdnet.evaluation.finder import evaluate_finder, finder_rows, per_image_table
from rcdnet.predict.pytorch import TorchPredictor
from rcdnet.segment.data import load_masks, normal_images
from rcdnet.segment.finder import LesionFinder
from rcdnet.segment.model import FILE as SEGMENTER_FILE
from rcdnet.segment.model import save_segmenter
from rcdnet.segment.train import choose_threshold, predict_maps, train_segmenter
from rcdnet.training import distributed as dist
from rcdnet.models.checkpoint import load_checkpoint, save_atomic
from rcdnet.training.members import has_training, train_members
from rcdnet.training.trainer import Trainer, stopped


class RunDirError(ValueError):
    pass


def open_run(run_dir: Path, cfg: RunConfig, resume: bool, write: bool = True
             ) -> tuple[RunConfig, dict[str, str] | None]:
    """Create or reopen a run directory. A resumed run keeps its saved config (completed with today's defaults
    for settings added since) and its split."""
    if write:
        writable_dir(run_dir)
    saved_cfg, split_file = run_dir / "config.yaml", run_dir / "split.csv"
    if has_training(run_dir) and not resume:
        raise RunDirError(f"{run_dir}: already holds a training run; pass --resume to continue it or choose another --out")
    if resume and saved_cfg.exists():
        asked, cfg = cfg, read_saved_config(saved_cfg)
        ignored = changed_settings(cfg.to_dict(), asked.to_dict())
        if ignored and write:
            print(f"{run_dir}: resuming with the run's own settings (config.yaml); these settings of this command "
                  f"differ and are NOT used: {'; '.join(ignored)}", file=sys.stderr)
    if write:
        save_config(cfg, saved_cfg)
    saved_split = {r["key"]: r["split"] for r in load_split(split_file)} if split_file.exists() else None
    return cfg, saved_split


def changed_settings(saved: dict, asked: dict, prefix: str = "") -> list[str]:
    """``key: saved -> asked`` for every setting in which ``asked`` differs from ``saved`` (nested dicts)."""
    out = []
    for k, v in asked.items():
        if isinstance(v, dict) and isinstance(saved.get(k), dict):
            out += changed_settings(saved[k], v, f"{prefix}{k}.")
        elif saved.get(k) != v:
            out.append(f"{prefix}{k}: {saved.get(k)!r} -> {v!r}")
    return out


def finished_run(run_dir: Path) -> dict | None:
    """The saved metrics of a run whose models (every member) finished training and that was evaluated, else None."""
    metrics, saved = run_dir / "metrics.json", run_dir / "config.yaml"
    if not (metrics.is_file() and saved.is_file() and (run_dir / "history.json").is_file()):
        return None
    train, history = read_saved_config(saved).train, json.loads((run_dir / "history.json").read_text())
    models = [[h for h in history if h.get("member", 0) == k] for k in range(train.members)]
    done = all(len(h) >= train.epochs or stopped(h, train.patience) for h in models)  # every epoch, or stopped early
    return json.loads(metrics.read_text()) if done else None


def calibrate_on_validation(best_path: Path, data: PreparedData, cfg: RunConfig
                            ) -> tuple[TorchPredictor, list, np.ndarray]:
    """Fit the softmax temperature and choose the operating points on the validation split only; store both
    in the best checkpoint. Returns the calibrated predictor and the validation samples and images."""
    ckpt = load_checkpoint(best_path)
    predictor = TorchPredictor(best_path)
    va_samples, va_images = data.subset("val")
    if cfg.eval.temperature_scaling:
        y_idx = np.array([predictor.classes.index(s.label) for s in va_samples])
        ckpt["temperature"] = predictor.decision.temperature = fit_temperature(predictor.logits_arrays(va_images),
                                                                                y_idx)
    ckpt["thresholds"] = choose_thresholds(predictor, va_images, [s.label for s in va_samples],
                                           cfg.eval.target_sensitivity).to_dict()
    save_atomic(ckpt, best_path)
    return TorchPredictor(best_path), va_samples, va_images


def ships_finder(cfg: RunConfig) -> bool:
    """Whether a run with ``cfg`` trains a lesion finder (a region-of-interest model; a whole-image one needs no box)."""
    return cfg.segment.epochs > 0 and cfg.data.roi


def fit_segmenter(cfg: RunConfig, data: PreparedData, data_root: Path, run_dir: Path, predictor=None,
                  log=lambda m: print(m, file=sys.stderr)) -> dict:
    """The lesion finder's part of the run: trained after the classifier on the same split, shipped as
    ``checkpoints/segmenter.pt`` beside ``best.pt``: trained (unless the run already shipped one: a resumed run keeps
    it), its threshold chosen and its numbers measured on validation (with ``predictor``: found-box vs given-box
    AUC). Returns those numbers and the per-epoch history."""
    path = run_dir / "checkpoints" / SEGMENTER_FILE
    if path.is_file():  # written once, complete with its threshold and numbers
        return LesionFinder.load(path, engine="pytorch").validation
    normals = normal_images(cfg.data.sources, data_root, cfg.data.val_fraction)
    sets = {}
    for which in ("train", "val"):
        chosen = [s for s in data.samples if data.split[s.key] == which] + normals[which]
        sets[which], _ = load_masks(chosen, cfg.segment.image_size)  # unreadable files are in data_problems.csv
    train, val = sets["train"], sets["val"]
    model, history = train_segmenter(cfg.segment, cfg.seed, train, val, log=log)
    finder = LesionFinder(model, image_size=cfg.segment.image_size, threshold=0.0, min_area=cfg.segment.min_area)
    conf = [finder.finding(finder.on_original(m, shape)).confidence
            for m, shape, has in zip(predict_maps(model, val.images), val.shapes, val.has_lesion) if has]
    finder.threshold = threshold = choose_threshold(np.array(conf), cfg.segment.target_sensitivity)
    validation = {"history": history, "in_sample": "found (the threshold was chosen on these lesion images)",
                  **evaluate_finder(finder, val.samples, predictor, cfg.eval.bootstrap)}
    save_segmenter(path, model, image_size=cfg.segment.image_size, threshold=threshold,
                   min_area=cfg.segment.min_area, validation=validation)
    return validation


def finder_on_external(cfg: RunConfig, data_root: Path, run_dir: Path, predictor) -> dict:
    """The shipped finder on every external set (a held-out hospital: its lesion images, and its normal ones where
    it has them), with ``predictor``'s found-box AUC in the ledger (dataset ``<name>-found-boxes``) and every image's
    numbers in ``<name>_finder.csv``."""
    from rcdnet.evaluation.ledger import record

    finder, out = LesionFinder.load(run_dir / "checkpoints" / SEGMENTER_FILE), {}
    for name in cfg.data.external:
        samples, _ = load_dataset(name, data_root, classes=tuple(predictor.classes))
        normals = normal_images((name,), data_root, 0.0)["train"]
        rows = finder_rows(finder, samples + normals, predictor)
        write_csv(run_dir / f"{name}_finder.csv", per_image_table(rows))
        out[name] = evaluate_finder(finder, samples + normals, predictor, cfg.eval.bootstrap, rows=rows)
        if "auc_found_box" in out[name]:
            out[name]["external_scorings"] = record(run_dir, f"{name}-found-boxes", out[name]["lesion_images"],
                                                    out[name]["auc_found_box"], predictor, environment()["commit"])
    return out


def dedup_subset(samples: list, pairs: list) -> list:
    """Keep one image of each duplicate group (the first by key)."""
    keys = {s.key for s in samples}
    drop = set()
    for p in sorted(pairs, key=lambda p: (p.a, p.b)):
        if p.a in keys and p.b in keys and p.a not in drop:
            drop.add(p.b)
    return [s for s in samples if s.key not in drop]


def train_model(cfg: RunConfig, data_root: Path, run_dir: Path, *, resume: bool, cache_dir: Path | None,
                progress: bool, split: dict[str, str] | None, ctx: dist.Context
                ) -> tuple[RunConfig, PreparedData, list[dict], dict]:
    """Prepare the data (rank 0 first: it fills the caches and writes the run directory) and train one model, or
    every member of a seed ensemble (``train.members``). Returns (config, data, history, best)."""
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
    if cfg.train.members > 1:
        history, best = train_members(cfg, data, run_dir, resume=resume, progress=progress, cache_dir=cache_dir,
                                      ctx=ctx)
        if ctx.main:
            write_json(run_dir / "history.json", history)
        return cfg, data, history, best
    trainer = Trainer(cfg, data, run_dir, progress=progress, cache_dir=cache_dir, ctx=ctx)
    if resume and trainer.resume() and ctx.main:
        print(f"resuming {run_dir} after epoch {trainer.start_epoch}")
    best = trainer.fit()
    dist.barrier(ctx)
    return cfg, data, trainer.history, best


def evaluate_run(cfg: RunConfig, data: PreparedData, data_root: Path, run_dir: Path, cache_dir: Path | None
                 ) -> tuple[TorchPredictor, dict, dict]:
    """Calibrate on validation, then evaluate on validation and on every external set (and on each external set
    without its internal duplicates). Returns (predictor, results, sensitivity analyses)."""
    predictor, va_samples, va_images = calibrate_on_validation(run_dir / "checkpoints" / "best.pt", data, cfg)
    n_boot = cfg.eval.bootstrap
    results = {VALIDATION: evaluate_samples(predictor, va_samples, VALIDATION, run_dir, n_boot, cache_dir,
                                            images=va_images)}
    extra = _without_duplicates(predictor, va_samples, va_images, data.pairs, VALIDATION, run_dir, n_boot, cache_dir,
                                f"{VALIDATION} with each duplicate group reduced to one image")
    for name in cfg.data.external:
        ext, _ = load_dataset(name, data_root, classes=tuple(predictor.classes))
        ext = with_duplicate_groups(ext, data.pairs)  # the set's own duplicate pairs are resampled as one case
        ext, ext_images, _ = preprocess_samples(ext, predictor.preprocessor, cache_dir)
        ext_predictor = predictor.adapted(ext_images) if cfg.eval.adabn else predictor
        results[name] = evaluate_samples(ext_predictor, ext, name, run_dir, n_boot, cache_dir, images=ext_images,
                                         ledger=True)
        extra |= _without_duplicates(ext_predictor, ext, ext_images, data.pairs, name, run_dir, n_boot, cache_dir,
                                     f"{name} without its internal duplicates")
    return predictor, results, extra


def _without_duplicates(predictor, samples: list, images: np.ndarray, pairs: list, name: str, run_dir: Path,
                        n_boot: int, cache_dir: Path | None, title: str) -> dict:
    """{title: the set scored with one image per duplicate group} (into ``run_dir/sensitivity``), or {} if it has
    no duplicates."""
    dedup = dedup_subset(samples, pairs)
    if len(dedup) == len(samples):
        return {}
    keep = {s.key for s in dedup}
    return {title: evaluate_samples(predictor, dedup, f"{name}-dedup", run_dir / "sensitivity", n_boot, cache_dir,
                                    images=images[[s.key in keep for s in samples]])}


def run(cfg: RunConfig, data_root: Path, run_dir: Path, *, resume: bool = False, cache_dir: Path | None = None,
        evaluate: bool = True, progress: bool = True, split: dict[str, str] | None = None) -> dict:
    """Train and evaluate into ``run_dir``. ``split`` (key -> train / val) replaces the default 7:3 split of a new
    run (cross-validation folds). Under torchrun, rank 0 prepares the data and caches first, every rank trains,
    and rank 0 alone writes and evaluates."""
    run_dir = Path(run_dir)
    if resume and evaluate and (done := finished_run(run_dir)) is not None:
        print(f"{run_dir}: finished earlier (every epoch trained and evaluated); nothing trained or scored again")
        return done
    runtime.apply(cfg.train.threads)
    env = environment()  # the commit, date and threading the run started with
    ctx = dist.setup(cfg.train.device)
    cfg, data, history, best = train_model(cfg, data_root, run_dir, resume=resume, cache_dir=cache_dir,
                                           progress=progress, split=split, ctx=ctx)
    if not ctx.main:
        return {"best": best, "rank": ctx.rank}
    plot_training_curves(history, run_dir)
    if not evaluate:
        return {"best": best}
    predictor, results, extra = evaluate_run(cfg, data, data_root, run_dir, cache_dir)
    finder = fit_segmenter(cfg, data, data_root, run_dir, predictor) if ships_finder(cfg) else None
    t = predictor.temperature
    plot_reliability({f"{n} (T=1)": (r.y, r.p_raw) for n, r in results.items()}
                     | {f"{n} (T={t:.2f})": (r.y, r.p) for n, r in results.items()},
                     run_dir / "reliability.png")
    plot_roc({"ROC: internal validation and external test": {
        n: (e.y, e.p, e.auc.value, e.auc.ci) for n, e in results.items()}}, run_dir / "roc.png")
    summary = data_summary(data)
    metrics = {"env": env, "best": best, "thresholds": predictor.thresholds, "data": summary,
               "results": {n: r.record for n, r in results.items()},
               "sensitivity": {n: r.record for n, r in extra.items()},
               "timing": {"epochs": len(history),
                          "total_seconds": round(sum(h["epoch_seconds"] for h in history), 1),
                          "peak_memory_mb": max(h["peak_memory_mb"] for h in history)}}
    if finder is not None:
        metrics["segmenter"] = finder
        if cfg.data.external:
            metrics["segmenter_external"] = finder_on_external(cfg, data_root, run_dir, predictor)
    write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir / "report.md", cfg=cfg, env=env, data_summary=summary, history=history, best=best,
                 thresholds=predictor.thresholds, results=results, extra_results=extra, segmenter=finder)
    return metrics
