"""A trained checkpoint on PyTorch: the predictor that training, evaluation and heat maps use."""

from __future__ import annotations

import copy
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from rcdnet.config import config_from_dict
from rcdnet.data.preprocess import Preprocessor
from rcdnet.models.adabn import adapt_batchnorm
from rcdnet.models.input import DecisionFunction, Normalise, to_grey
from rcdnet.models.members import member_count
from rcdnet.models.registry import build_model, input_stats
from rcdnet.predict.base import Predictor
from rcdnet.predict.points import OperatingPoints
from rcdnet.runtime import engine as process_engine
from rcdnet.runtime import threads as compute_threads
from rcdnet.models.checkpoint import load_checkpoint, resolve_checkpoint

INFERENCE_PIXELS = 320 * 320  # pixels per forward pass: with the mirror, every activation of one 320 px image stays
# under the heap threshold of ``rcdnet.runtime``; larger passes were slower on the CPU (scripts/bench_throughput.py).
# Smaller inputs go several to a pass (224 and 320 px: one image; 64 px: 25).
ADABN_BATCH = 32  # images per batch-norm statistics estimate (AdaBN needs real batches)


class TorchPredictor(Predictor):
    """A checkpoint's model inside its :class:`~rcdnet.models.input.DecisionFunction`, with the checkpoint's
    preprocessing, classes, temperature and operating points. ``tta`` (default: the run's ``eval.tta``) averages
    each image with its mirror. The logits are computed on ``engine`` (default: the process's,
    :func:`rcdnet.runtime.engine`): ONNX Runtime on a graph exported from the model and checked against it
    (:mod:`rcdnet.predict.engine`; PyTorch, with a warning, if that fails), or PyTorch; the localisation head's
    map too. Heat maps and batch-norm re-estimation (AdaBN) always use PyTorch."""

    def __init__(self, checkpoint: str | Path, batch_size: int | None = None, tta: bool | None = None,
                 engine: str | None = None):
        compute_threads()  # the process's threading policy, if no entry point applied it
        self.engine = engine or process_engine()
        self._graph = None  # the ONNX Runtime logits, made on first use (by one thread: frames are located on several)
        self._graph_lock = threading.Lock()
        self.source = str(resolve_checkpoint(checkpoint))
        ckpt = load_checkpoint(self.source)
        self.config = config_from_dict(ckpt["config"], f"{self.source}: config")
        self.classes: list[str] = list(ckpt["classes"])
        self.thresholds = OperatingPoints.from_dict(ckpt.get("thresholds"), self.source).to_dict()
        self.val_keys: list[str] = list(ckpt.get("val_keys") or [])
        self.site_record: dict | None = ckpt.get("site_calibration")  # applied by load_predictor (predict.site)
        self.training_sources = self.config.data.sources
        self.model_name = self.config.model.name
        model = build_model(self.config, len(self.classes), pretrained=False, members=member_count(ckpt["model"]))
        model.load_state_dict(ckpt["model"])
        model.eval().to(memory_format=torch.channels_last)  # faster convolutions on the CPU; same numbers
        stored = ckpt.get("input") or {}
        mean, std = (stored["mean"], stored["std"]) if "mean" in stored else input_stats(model)
        self.preprocessor = (Preprocessor(**stored["preprocessing"]) if "preprocessing" in stored
                             else Preprocessor.from_config(self.config.data))
        self.decision = DecisionFunction(model, Normalise(mean, std), float(ckpt.get("temperature", 1.0)),
                                         self.config.eval.tta if tta is None else tta).eval()
        self.batch_size = batch_size or max(1, INFERENCE_PIXELS // self.preprocessor.size ** 2)

    @property
    def runtime(self) -> str:
        return "onnxruntime (graph exported from the checkpoint)" if self.engine == "onnxruntime" else "pytorch"

    @property
    def model(self) -> torch.nn.Module:
        return self.decision.model

    @property
    def temperature(self) -> float:
        return self.decision.temperature

    @property
    def tta(self) -> bool:
        return self.decision.tta


    def model_input(self, images: np.ndarray) -> torch.Tensor:
        """(N, S, S) uint8 -> (N, 3, S, S) the network's input (what heat maps and AdaBN feed the model)."""
        return self.decision.model_input(to_grey(images))

    @torch.inference_mode()
    def localise(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 -> (N, S, S) float32 lesion probability per pixel from the localisation head, upsampled
        to the input size (map it onto the original with :meth:`Preprocessor.to_original`)."""
        graph = self._onnx_graph()
        out = [graph(images[i:i + self.batch_size, None].astype(np.float32), "lesion_map")[:, 0] if graph is not None
               else self.decision.lesion_map(to_grey(images[i:i + self.batch_size]))[:, 0].numpy()
               for i in range(0, len(images), self.batch_size)]
        s = self.preprocessor.size
        return np.concatenate(out) if out else np.zeros((0, s, s), np.float32)

    def _onnx_graph(self):
        """The ONNX Runtime logits, exported or loaded on first use; None on the PyTorch engine."""
        with self._graph_lock:
            if self.engine == "onnxruntime" and self._graph is None:
                from rcdnet.data.preprocess import default_cache_dir
                from rcdnet.predict.engine import OnnxLogits

                try:
                    self._graph = OnnxLogits(self.decision, self.preprocessor.size, default_cache_dir())
                except Exception as exc:  # noqa: BLE001 (export, ONNX Runtime or the check failed: PyTorch is exact)
                    warnings.warn(f"{self.source}: ONNX Runtime engine unavailable, using PyTorch "
                                  f"({type(exc).__name__}: {str(exc)[:300]})", stacklevel=4)
                    self.engine = "pytorch"
        return self._graph if self.engine == "onnxruntime" else None

    @torch.inference_mode()
    def logits_arrays(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 -> (N, C) logits before the temperature (mirrored-image average if ``tta``)."""
        graph = self._onnx_graph()
        out = [graph(images[i:i + self.batch_size, None].astype(np.float32)) if graph is not None
               else self.decision.logits(to_grey(images[i:i + self.batch_size])).numpy()
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def probabilities(self, logits: np.ndarray, temperature: float | None = None) -> np.ndarray:
        """(N, C) logits -> (N, C) softmax probabilities at the checkpoint's temperature (or the one given)."""
        t = self.temperature if temperature is None else temperature
        return torch.softmax(torch.from_numpy(np.asarray(logits, np.float32)) / t, dim=1).numpy()

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 -> (N, C) calibrated probabilities."""
        return self.probabilities(self.logits_arrays(images))

    def scored(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((N, C) at the fitted temperature, (N, C) at temperature 1), from one pass."""
        logits = self.logits_arrays(images)
        return self.probabilities(logits), self.probabilities(logits, temperature=1.0)

    @property
    def torch_predictor(self) -> TorchPredictor:
        return self

    def with_thresholds(self, points: OperatingPoints) -> TorchPredictor:
        """A copy deciding at ``points`` (the same network and calibration); this one is unchanged."""
        other = copy.copy(self)
        other.thresholds = points.to_dict()
        return other

    def adapted(self, images: np.ndarray) -> TorchPredictor:
        """A copy whose batch-norm statistics are re-estimated on ``images`` (AdaBN; no labels used)."""
        batches = (self.model_input(images[i:i + ADABN_BATCH]) for i in range(0, len(images), ADABN_BATCH))
        other = copy.copy(self)
        other.engine, other._graph = "pytorch", None  # new batch-norm statistics: the exported graph no longer applies
        other._graph_lock = threading.Lock()
        other.decision = DecisionFunction(adapt_batchnorm(self.model, batches), self.decision.normalise,
                                          self.temperature, self.tta).eval()
        return other
