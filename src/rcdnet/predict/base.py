"""What every predictor offers (:class:`Predictor`), and the output row of one prediction."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from rcdnet.data.preprocess import Preprocessor


@runtime_checkable
class Predictor(Protocol):
    """A trained model with its preprocessing and validation-chosen operating points.

    ``predict_arrays``: (N, S, S) uint8 preprocessed images -> (N, len(classes)) calibrated probabilities."""

    classes: list[str]
    thresholds: dict[str, float]     # operating point -> p(malignant) threshold, chosen on validation
    preprocessor: Preprocessor       # file -> (S, S) uint8, as in training
    runtime: str                     # "pytorch", "pytorch ensemble", "onnxruntime"
    model_name: str                  # the registry name, e.g. "rcdnet"
    source: str                      # the file it was loaded from
    val_keys: list[str]              # the run's validation split (empty when unknown)
    training_sources: tuple[str, ...]  # the training sources (where its validation split comes from)

    def predict_arrays(self, images: np.ndarray) -> np.ndarray: ...

    @property
    def malignant_index(self) -> int: ...


def prediction_row(predictor: Predictor, name: str, probs: np.ndarray, frames: int = 1) -> dict:
    """One output row: label (arg-max class), malignancy probability, and the decision at every operating point
    chosen on validation."""
    p_mal = float(probs[predictor.malignant_index])
    row = {"image": name, "label": predictor.classes[int(np.argmax(probs))], "p_malignant": round(p_mal, 4)}
    for op, t in predictor.thresholds.items():
        row[f"malignant@{op}"] = p_mal >= t
    row["frames"] = frames
    return row
