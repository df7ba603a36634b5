"""Prediction: any trained model behind one :class:`Predictor` interface.

    load_predictor(path)   a run directory or ``.pt`` checkpoint -> :class:`TorchPredictor` (PyTorch)
                           a cross-validation directory or ``ensemble.json`` -> :class:`EnsemblePredictor`
                           an exported ``.onnx`` -> :class:`OnnxPredictor` (ONNX Runtime)
                           any of them carrying a site's calibration (``rcdnet site-validate``) -> wrapped in
                           :class:`~rcdnet.predict.site_calibration.SitePredictor`
    predict_sources        images, DICOM and video files -> one row per file (+ per-frame rows for clips)
"""

from __future__ import annotations

from pathlib import Path

from rcdnet.predict.base import Predictor, prediction_row
from rcdnet.predict.ensemble import ENSEMBLE_FILE, EnsemblePredictor
from rcdnet.predict.onnx import OnnxPredictor
from rcdnet.predict.pytorch import TorchPredictor
from rcdnet.predict.site_calibration import with_site
from rcdnet.predict.sources import predict_sources

__all__ = ["ENSEMBLE_FILE", "EnsemblePredictor", "OnnxPredictor", "Predictor", "TorchPredictor", "load_predictor",
           "model_file", "model_kind", "predict_sources", "prediction_row"]


KINDS = {".onnx": "onnx", ".json": "ensemble"}  # by suffix; anything else is a checkpoint (or a run directory)


def model_kind(path: str | Path) -> str:
    """"checkpoint", "ensemble" or "onnx": the one place a model file's suffix decides what it is."""
    return KINDS.get(Path(path).suffix, "checkpoint")


def model_file(path: str | Path) -> Path:
    """The file behind a model argument: the ``.onnx``, the ``ensemble.json``, or the checkpoint."""
    from rcdnet.models.checkpoint import resolve_checkpoint

    p = Path(path)
    if model_kind(p) != "checkpoint":
        return p
    if p.is_dir() and (p / ENSEMBLE_FILE).is_file():
        return p / ENSEMBLE_FILE
    return resolve_checkpoint(p)


def load_predictor(path: str | Path, batch_size: int | None = None) -> Predictor:
    """Any trained model (see the module docstring), at its own settings."""
    f = model_file(path)
    if model_kind(f) == "onnx":
        predictor = OnnxPredictor(f, batch_size=batch_size)
    elif model_kind(f) == "ensemble":
        predictor = EnsemblePredictor(f, batch_size=batch_size)
    else:
        predictor = TorchPredictor(f, batch_size=batch_size)
    return with_site(predictor, predictor.site_record, str(f))
