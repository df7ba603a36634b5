"""Operating points: chosen on a run's validation split only, never on the set they are then used on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rcdnet.data.inputs import VALIDATION, named_dataset
from rcdnet.data.preprocess import preprocess_samples
from rcdnet.predict.base import Predictor
from rcdnet.predict.points import OperatingPoints
from rcdnet.predict.pytorch import TorchPredictor


def choose_thresholds(predictor: Predictor, val_images: np.ndarray, val_labels: list[str],
                      target: float) -> OperatingPoints:
    """``default`` (p >= 0.5) and ``high_sensitivity`` (the highest threshold that keeps sensitivity >= ``target``
    on the validation images)."""
    p = predictor.predict_arrays(val_images)[:, predictor.malignant_index]
    y = np.array([int(lab == "malignant") for lab in val_labels])
    return OperatingPoints.choose(y, p, target)


def rechoose_for_variant(predictor: TorchPredictor, adabn: bool, data_root: str | Path | None,
                         cache_dir: str | Path | None) -> OperatingPoints:
    """Operating points for a test-time variant the checkpoint's were not chosen for (mirror TTA on a run trained
    without it, or AdaBN): chosen again, for that variant, on the checkpoint's own validation split (AdaBN:
    adapted to the validation images), never on the target set."""
    val, _ = named_dataset(VALIDATION, data_root, predictor)
    val, val_images, _ = preprocess_samples(val, predictor.preprocessor, cache_dir)
    chooser = predictor.adapted(val_images) if adabn else predictor
    return choose_thresholds(chooser, val_images, [s.label for s in val], predictor.config.eval.target_sensitivity)
