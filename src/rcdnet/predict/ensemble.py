"""Several trained models (the folds of ``rcdnet cv``) used as one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rcdnet.predict.base import Predictor
from rcdnet.predict.points import OperatingPoints
from rcdnet.predict.pytorch import TorchPredictor

ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_FORMAT = "rcdnet-ensemble/1"


def ensemble_file(path: str | Path) -> Path:
    """``ensemble.json`` itself, or the one inside a cross-validation directory."""
    p = Path(path)
    return p / ENSEMBLE_FILE if p.is_dir() else p


class EnsemblePredictor(Predictor):
    """The mean of the members' calibrated probabilities, with operating points chosen on the pooled out-of-fold
    predictions. The description file is JSON (``format``, ``members``: checkpoint paths relative to it,
    ``thresholds``); every member is read like any checkpoint, never unpickled."""

    runtime = "pytorch ensemble"

    def __init__(self, path: str | Path, batch_size: int | None = None):
        spec_file = ensemble_file(path)
        try:
            spec = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{spec_file}: not a readable ensemble description ({exc})") from None
        members = spec.get("members") if isinstance(spec, dict) else None
        if (not isinstance(spec, dict) or spec.get("format") != ENSEMBLE_FORMAT or not isinstance(members, list)
                or not members or not all(isinstance(m, str) for m in members)):
            raise ValueError(f"{spec_file}: not an rcdnet ensemble (format {ENSEMBLE_FORMAT} with a list of member "
                             "checkpoint paths)")
        thresholds = spec.get("thresholds")
        if thresholds is not None and not isinstance(thresholds, dict):
            raise ValueError(f"{spec_file}: thresholds must map operating-point names to numbers")
        thresholds = OperatingPoints.from_dict(thresholds, str(spec_file)).to_dict()
        self.members = [TorchPredictor(spec_file.parent / m, batch_size=batch_size) for m in members]
        first = self.members[0]
        for m in self.members[1:]:
            if m.classes != first.classes or m.preprocessor != first.preprocessor:
                raise ValueError(f"{spec_file}: members differ in classes or preprocessing")
        self.source = str(spec_file)
        self.classes, self.preprocessor, self.model_name = first.classes, first.preprocessor, first.model_name
        self.training_sources = first.training_sources
        self.thresholds: dict[str, float] = {str(k): float(v) for k, v in thresholds.items()}
        self.val_keys: list[str] = []
        self.site_record: dict | None = spec.get("site_calibration")


    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 -> (N, C): the mean of the members' calibrated probabilities."""
        return np.mean([m.predict_arrays(images) for m in self.members], axis=0)
