"""Evaluate a trained model on one dataset: per-image predictions, metrics with CIs at each operating point,
ROC and confusion-matrix figures, ``metrics.json``; and ``rcdnet evaluate``'s choice of the model's variant."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from rcdnet.data.duplicates import with_duplicate_groups
from rcdnet.data.preprocess import preprocess_samples
from rcdnet.data.samples import DataProblem, Sample
from rcdnet.evaluation.calibration import expected_calibration_error
from rcdnet.evaluation.ledger import record
from rcdnet.evaluation.metrics import metrics_with_ci
from rcdnet.evaluation.plots import plot_confusion, plot_roc
from rcdnet.evaluation.results import Evaluation
from rcdnet.evaluation.thresholds import rechoose_for_variant
from rcdnet.files import write_csv, write_json
from rcdnet.predict import Predictor, TorchPredictor, load_predictor, model_file, model_kind
from rcdnet.predict.site_calibration import with_site
from rcdnet.runtime import describe, environment, with_progress


def _probabilities(predictor: Predictor, images: np.ndarray, progress: bool = False, chunk: int = 64
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(calibrated (N, C), before temperature scaling (N, C)); a model without a temperature gives both the same."""
    calibrated, raw = [], []
    for i in with_progress(range(0, len(images), chunk), -(-len(images) // chunk), "classify", progress, "batch"):
        cal, before = predictor.scored(images[i:i + chunk])
        calibrated.append(cal)
        raw.append(before)
    return np.concatenate(calibrated), np.concatenate(raw)


def _defined(metrics: dict) -> dict:
    """NaN (a metric a one-class set cannot have) as None, so ``metrics.json`` stays valid JSON."""
    def clean(v):
        return None if isinstance(v, float) and np.isnan(v) else v

    return {k: {"value": clean(m["value"]), "ci": None if m["ci"] is None or any(np.isnan(m["ci"])) else m["ci"]}
            if isinstance(m, dict) and "value" in m else m for k, m in metrics.items()}


def nothing_readable(name: str, problems: list[DataProblem]) -> str:
    """'NAME: no readable images to evaluate (the first three reasons)'."""
    why = "; ".join(str(p) for p in problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return f"{name}: no readable images to evaluate" + (f" ({why})" if why else "")


def evaluate_samples(predictor: Predictor, samples: list[Sample], name: str, out_dir: Path,
                     n_boot: int = 2000, cache_dir: Path | None = None, seed: int = 0,
                     images: np.ndarray | None = None, progress: bool = False, extra: dict | None = None,
                     ledger: bool = False) -> Evaluation:
    """Predict ``samples`` and write ``{name}_predictions.csv``, ``{name}_metrics.json``, ``{name}_roc.png`` and
    ``{name}_confusion.png`` into ``out_dir``. ``images`` may hold their preprocessed arrays already.

    Metrics are binary (malignant vs the rest) at every operating point the checkpoint carries; a set drawn from
    several sources (a multi-source validation split) has them per source as well (``by_source``), each computed
    on that source's images alone at the same thresholds. ``ledger``: a labelled set outside the model's training
    sources, so the scoring is appended to the ledger (:mod:`rcdnet.evaluation.ledger`) and the result says how many
    times the set had been scored before."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    problems: list[DataProblem] = []
    if images is None:
        samples, images, problems = preprocess_samples(samples, predictor.preprocessor, cache_dir, progress)
    if not samples:
        raise ValueError(nothing_readable(name, problems))
    probs, raw = _probabilities(predictor, images, progress)
    p_mal, p_raw = probs[:, predictor.malignant_index], raw[:, predictor.malignant_index]
    y = np.array([int(s.label == "malignant") for s in samples])
    result = {"dataset": name, "n": len(samples), "n_malignant": int(y.sum()), "checkpoint": predictor.source,
              "temperature": getattr(predictor, "temperature", 1.0), "tta": getattr(predictor, "tta", False),
              "ece": expected_calibration_error(y, p_mal), "ece_before_temperature": expected_calibration_error(y, p_raw),
              "operating_points": {}, "skipped_files": [str(p) for p in problems], "runtime": describe(),
              "engine": predictor.runtime,
              **(extra or {})}
    groups = np.array([s.group or s.key for s in samples]) if any(s.group for s in samples) else None
    result["ci_resampling"] = (f"groups ({len(set(groups))} patients / duplicate groups for {len(samples)} images)"
                               if groups is not None else "images")
    present = sorted({"malignant" if v else "benign" for v in y})
    if len(present) < 2:
        result["note"] = (f"only {present[0]} cases: AUC, the ROC curve and the "
                          f"{'sensitivity' if present[0] == 'benign' else 'specificity'} are undefined")
    with warnings.catch_warnings():  # a one-class set: said once in the note, not by every sklearn call
        warnings.simplefilter("ignore", UserWarning)
        for op, t in predictor.thresholds.items():
            result["operating_points"][op] = _defined(metrics_with_ci(y, p_mal, t, n_boot, seed, groups))
        sources = np.array([s.source for s in samples])
        if len(set(sources)) > 1:
            result["by_source"] = {
                src: {"n": int(m.sum()), "n_malignant": int(y[m].sum()),
                      "operating_points": {op: _defined(metrics_with_ci(y[m], p_mal[m], t, n_boot, seed,
                                                                        None if groups is None else groups[m]))
                                           for op, t in predictor.thresholds.items()}}
                for src in sorted(set(sources)) for m in [sources == src]}
    if ledger:
        result["external_scorings"] = record(out_dir, name, len(samples), result["operating_points"]["default"]["auc"]
                                             ["value"], predictor, environment()["commit"])
    rows = [{"key": s.key, "path": str(s.path), "label": s.label, "group": s.group or s.key, "p_malignant": f"{pm:.6f}",
             "predicted": predictor.classes[int(np.argmax(pr))],
             **{f"malignant@{op}": int(pm >= t) for op, t in predictor.thresholds.items()}}
            for s, pr, pm in zip(samples, probs, p_mal)]
    write_csv(out_dir / f"{name}_predictions.csv", rows,
              ["key", "path", "label", "group", "p_malignant", "predicted"] + [f"malignant@{op}" for op in predictor.thresholds])
    auc = result["operating_points"]["default"]["auc"]
    if auc["value"] is not None:
        plot_roc({f"ROC: {name}": {name: (y, p_mal, auc["value"], auc["ci"])}}, out_dir / f"{name}_roc.png")
    t0 = predictor.thresholds["default"]
    plot_confusion(y, (p_mal >= t0).astype(int), ["benign", "malignant"], out_dir / f"{name}_confusion.png",
                   title=f"{name} @ p>={t0:.2f}")
    write_json(out_dir / f"{name}_metrics.json", result)
    return dataclasses.replace(Evaluation.from_dict(result, name), y=y, p=p_mal, p_raw=p_raw)


def predictor_for_evaluation(model: str | Path, *, tta: bool = False, adabn: bool = False,
                             data_root: str | Path | None = None, cache_dir: str | Path | None = None,
                             report=print) -> Predictor:
    """The model as ``rcdnet evaluate`` scores it. ``tta`` / ``adabn`` are test-time variants of a PyTorch checkpoint;
    when the checkpoint's operating points were not chosen for the variant, they are chosen again on its own
    validation split (:func:`~rcdnet.evaluation.thresholds.rechoose_for_variant`). AdaBN itself is applied to the
    evaluated set's images by :func:`evaluate_dataset`."""
    f = model_file(model)
    kind = model_kind(f)
    if kind == "onnx":
        raise ValueError(f"{model}: evaluate a checkpoint or an ensemble (the ONNX export is verified against its "
                         "checkpoint by `rcdnet export`)")
    if kind == "ensemble" and (tta or adabn):
        raise ValueError(f"{model}: --tta and --adabn are test-time variants of one checkpoint; an ensemble is "
                         "evaluated as its members were calibrated")
    if kind != "ensemble" and (tta or adabn) and TorchPredictor(f).site_record:
        raise ValueError(f"{model}: carries a site calibration, fitted to the model as it is; --tta and --adabn are "
                         "variants of the original checkpoint (evaluate that instead)")
    predictor = TorchPredictor(f, tta=True if tta else None) if kind != "ensemble" else load_predictor(f)
    if kind != "ensemble":  # load_predictor applied an ensemble's
        predictor = with_site(predictor, predictor.site_record, str(f))
    if (tta and not predictor.config.eval.tta) or adabn:  # a checkpoint without a site calibration (checked above)
        predictor = predictor.with_thresholds(rechoose_for_variant(predictor, adabn, data_root, cache_dir))
        report(f"operating points chosen again on the run's validation split for this test-time variant: {predictor.thresholds}")
    return predictor


def evaluate_dataset(predictor: Predictor, samples: list[Sample], name: str, out_dir: Path, *, n_boot: int = 2000,
                     adabn: bool = False, cache_dir: str | Path | None = None, progress: bool = False,
                     extra: dict | None = None, ledger: bool = False) -> Evaluation:
    """:func:`evaluate_samples`, with AdaBN first (batch-norm statistics re-estimated on these images) if asked;
    ``extra`` is stored in the metrics file too. Near-duplicates among ``samples`` are screened for first (cached)
    and share a group, as in training's own evaluation, so the intervals never count them as separate patients."""
    samples = with_duplicate_groups(samples, cache_dir=Path(cache_dir) if cache_dir else None, progress=progress)
    if not adabn:
        return evaluate_samples(predictor, samples, name, out_dir, n_boot, cache_dir, progress=progress, extra=extra,
                                ledger=ledger)
    samples, images, bad = preprocess_samples(samples, predictor.preprocessor, cache_dir, progress)
    res = evaluate_samples(predictor.adapted(images), samples, name, out_dir, n_boot, cache_dir, images=images,
                           progress=progress, extra=extra, ledger=ledger)
    res.record["skipped_files"] += [str(p) for p in bad]
    write_json(Path(out_dir) / f"{name}_metrics.json", res.record)
    return res
