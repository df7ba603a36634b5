"""An exported model (``rcdnet export``) on ONNX Runtime.

The graph is the whole :class:`~rcdnet.models.input.DecisionFunction`: ``image`` (N, 1, S, S) float32 grey levels
0..255 -> ``probabilities`` (N, C). Preprocessing, classes, thresholds, temperature and provenance travel in the
model's metadata (``metadata_props["rcdnet"]``, JSON), checked here before the model is used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rcdnet.data.preprocess import Preprocessor
from rcdnet.models.exported import session
from rcdnet.predict.base import Predictor

METADATA_KEY = "rcdnet"
ONNX_FORMAT = "rcdnet-onnx/1"


def read_metadata(path: str | Path) -> dict:
    """The rcdnet metadata of an ONNX file, checked for the fields a predictor needs."""
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises protobuf DecodeError and others for a damaged file
        raise ValueError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    props = {p.key: p.value for p in m.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path}: an ONNX model without rcdnet metadata (export it with `rcdnet export`)")
    try:
        meta = json.loads(props[METADATA_KEY])
        classes, thresholds = meta["classes"], meta["thresholds"]
        ok = (isinstance(classes, list) and "malignant" in classes and isinstance(thresholds, dict)
              and all(isinstance(v, (int, float)) for v in thresholds.values())
              and isinstance(meta["preprocessing"], dict))
        Preprocessor(**meta["preprocessing"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: damaged rcdnet metadata ({type(exc).__name__}: {exc})") from None
    if not ok:
        raise ValueError(f"{path}: damaged rcdnet metadata (classes with 'malignant', numeric thresholds and "
                         "preprocessing settings expected)")
    return meta


class OnnxPredictor(Predictor):
    """``predict_arrays`` (N, S, S) uint8 -> (N, C) probabilities on ONNX Runtime, with the exported model's
    classes, thresholds and preprocessing."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, batch_size: int | None = None, threads: int = 0):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        meta = read_metadata(path)
        self.source = str(path)
        self.metadata = meta
        self.classes: list[str] = list(meta["classes"])
        self.thresholds: dict[str, float] = {str(k): float(v) for k, v in meta["thresholds"].items()}
        self.temperature = float(meta.get("temperature", 1.0))
        self.tta = bool(meta.get("tta", False))
        self.model_name = str(meta.get("model", "unknown"))
        self.training_sources = tuple(meta.get("training_sources") or [meta.get("training_dataset", "busi")])
        self.val_keys: list[str] = []
        self.site_record: dict | None = meta.get("site_calibration")
        self.preprocessor = Preprocessor(**meta["preprocessing"])
        self.batch_size = batch_size or 32
        self.session = session(path, threads)


    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        out = [self.session.run(["probabilities"], {"image": images[i:i + self.batch_size, None].astype(np.float32)})[0]
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    @property
    def has_localiser(self) -> bool:
        return "lesion_map" in {o.name for o in self.session.get_outputs()}

    def localise(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 -> (N, S, S) float32 lesion probability per pixel (a model exported with its
        localisation head: the graph's ``lesion_map`` output)."""
        if not self.has_localiser:
            raise ValueError(f"{self.source}: has no localisation head (no lesion_map output)")
        out = [self.session.run(["lesion_map"], {"image": images[i:i + self.batch_size, None].astype(np.float32)})[0]
               for i in range(0, len(images), self.batch_size)]
        s = self.preprocessor.size
        return np.concatenate(out)[:, 0] if out else np.zeros((0, s, s), np.float32)
