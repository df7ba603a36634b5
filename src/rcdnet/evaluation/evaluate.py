"""Evaluate a trained model on one dataset: per-image predictions, metrics with CIs at each operating point,
ROC and confusion-matrix figures, ``metrics.json``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from rcdnet.data.preprocess import preprocess_samples
from rcdnet.data.samples import DataProblem, Sample
from rcdnet.evaluation.calibration import expected_calibration_error
from rcdnet.evaluation.metrics import metrics_with_ci
from rcdnet.evaluation.plots import plot_confusion, plot_roc
from rcdnet.inference import Predictor


def evaluate_samples(predictor: Predictor, samples: list[Sample], name: str, out_dir: Path,
                     n_boot: int = 2000, cache_dir: Path | None = None, seed: int = 0,
                     images: np.ndarray | None = None) -> dict:
    """Predict ``samples`` and write ``{name}_predictions.csv``, ``{name}_metrics.json``, ``{name}_roc.png`` and
    ``{name}_confusion.png`` into ``out_dir``. ``images`` may hold their preprocessed arrays already.

    Metrics are binary (malignant vs the rest) at every operating point the checkpoint carries."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    problems: list[DataProblem] = []
    if images is None:
        samples, images, problems = preprocess_samples(samples, predictor.preprocessor, cache_dir)
    if not samples:
        raise ValueError(f"{name}: no readable images to evaluate")
    logits = predictor.logits_arrays(images)
    probs = predictor.probabilities(logits)
    p_mal = probs[:, predictor.malignant_index]
    p_raw = predictor.probabilities(logits, temperature=1.0)[:, predictor.malignant_index]
    y = np.array([int(s.label == "malignant") for s in samples])
    result = {"dataset": name, "n": len(samples), "n_malignant": int(y.sum()), "checkpoint": predictor.checkpoint_path,
              "temperature": predictor.temperature, "tta": predictor.tta,
              "ece": expected_calibration_error(y, p_mal), "ece_before_temperature": expected_calibration_error(y, p_raw),
              "operating_points": {}, "skipped_files": [str(p) for p in problems]}
    for op, t in predictor.thresholds.items():
        result["operating_points"][op] = metrics_with_ci(y, p_mal, t, n_boot, seed)
    with open(out_dir / f"{name}_predictions.csv", "w", newline="") as fh:
        fields = ["key", "path", "label", "p_malignant", "predicted"] + [f"malignant@{op}" for op in predictor.thresholds]
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for s, pr, pm in zip(samples, probs, p_mal):
            row = {"key": s.key, "path": str(s.path), "label": s.label, "p_malignant": f"{pm:.6f}",
                   "predicted": predictor.classes[int(np.argmax(pr))]}
            row.update({f"malignant@{op}": int(pm >= t) for op, t in predictor.thresholds.items()})
            w.writerow(row)
    auc = result["operating_points"]["default"]["auc"]
    plot_roc({name: (y, p_mal, auc["value"], auc["ci"])}, out_dir / f"{name}_roc.png", title=f"ROC: {name}")
    t0 = predictor.thresholds["default"]
    plot_confusion(y, (p_mal >= t0).astype(int), ["benign", "malignant"], out_dir / f"{name}_confusion.png",
                   title=f"{name} @ p>={t0:.2f}")
    (out_dir / f"{name}_metrics.json").write_text(json.dumps(result, indent=1))
    result["_y"], result["_p"], result["_p_raw"] = y, p_mal, p_raw  # for combined figures; not serialised
    return result
