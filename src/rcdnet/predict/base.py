"""What every predictor offers (:class:`Predictor`), and the output row of one prediction."""

from __future__ import annotations

import abc

import numpy as np

from rcdnet.data.preprocess import Preprocessor
from rcdnet.predict.points import OperatingPoints


class Predictor(abc.ABC):
    """What every predictor is (as pytorch-grad-cam's ``BaseCAM`` is for its methods): a trained model with its
    preprocessing and validation-chosen operating points. Subclasses (a checkpoint, a fold ensemble, an ONNX
    export, a site's recalibration of any of them) set the attributes below and implement ``predict_arrays``:
    (N, S, S) uint8 preprocessed images -> (N, len(classes)) calibrated probabilities."""

    classes: list[str]
    thresholds: dict[str, float]     # operating point -> p(malignant) threshold, chosen on validation
    preprocessor: Preprocessor       # file -> (S, S) uint8, as in training
    runtime: str                     # "pytorch", "pytorch ensemble", "onnxruntime"
    model_name: str                  # the registry name, e.g. "rcdnet"
    source: str                      # the file it was loaded from
    val_keys: list[str]              # the run's validation split (empty when unknown)
    training_sources: tuple[str, ...]  # the training sources (where its validation split comes from)

    @abc.abstractmethod
    def predict_arrays(self, images: np.ndarray) -> np.ndarray: ...

    def scored(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S) uint8 -> ((N, C) calibrated probabilities, (N, C) the same before the model's own temperature);
        a model without a temperature of its own gives the same array twice."""
        p = self.predict_arrays(images)
        return p, p

    @property
    def torch_predictor(self):
        """The PyTorch checkpoint behind this predictor (heat maps need it), None when there is none (an ONNX
        export, a fold ensemble)."""
        return None

    @property
    def malignant_index(self) -> int:
        """The column of p(malignant) in ``predict_arrays``' output."""
        return self.classes.index("malignant")


def prediction_row(predictor: Predictor, name: str, probs: np.ndarray, frames: int = 1) -> dict:
    """One output row: label (arg-max class), malignancy probability, and the decision at every operating point
    chosen on validation."""
    p_mal = float(probs[predictor.malignant_index])
    row = {"image": name, "label": predictor.classes[int(np.argmax(probs))], "p_malignant": round(p_mal, 4)}
    for op, called in OperatingPoints.from_dict(predictor.thresholds).decide(p_mal).items():
        row[f"malignant@{op}"] = called
    row["frames"] = frames
    return row
