"""Image in, lesions out: the shipped segmenter applied to a whole (H, W, 3) image.

The image is made grey and squashed to the segmenter's square, its lesion probability map resized back onto the
original's pixels, and each connected region measured (:mod:`rcdnet.segment.lesions`). A region is a found lesion
when its confidence reaches the threshold chosen on validation (the finder keeps ``segment.target_sensitivity`` of
the validation lesion images); below it the answer is "no lesion found", never a silent guess."""

from __future__ import annotations

import dataclasses
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from rcdnet.data.boxes import Box, BoxError
from rcdnet.data.decode import to_gray
from rcdnet.segment.lesions import Lesion, measure, regions
from rcdnet.segment.model import ONNX_METADATA_KEY, SegmenterGraph, load_segmenter


ENGINE_TOLERANCE = 1e-4  # largest |lesion probability difference| accepted between ONNX Runtime and PyTorch


class NoLesionFound(BoxError):
    """The finder's best region is below its confidence threshold: the user has to draw the box."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """What the finder says of one image: ``lesions`` (confidence >= ``threshold``, most confident first) and its
    best guess even when that is below the threshold (None on a blank map)."""

    lesions: tuple[Lesion, ...]
    best: Lesion | None
    threshold: float

    @property
    def found(self) -> bool:
        return bool(self.lesions)

    @property
    def confidence(self) -> float:
        return self.best.confidence if self.best is not None else 0.0

    def refusal(self) -> str:
        return (f"no lesion found (finder confidence {self.confidence:.2f} < its threshold {self.threshold:.2f}, "
                "chosen on validation): draw a box (--box x0,y0,x1,y1)")


class LesionFinder:
    """A trained segmenter (``checkpoints/segmenter.pt``) with its validation-chosen threshold."""

    def __init__(self, model: torch.nn.Module | None, *, image_size: int, threshold: float, min_area: float,
                 source: str = "(in memory)", validation: dict | None = None, session=None):
        """``model``: the PyTorch network; or ``session``: its ONNX Runtime export (:meth:`load_onnx`)."""
        self.graph = SegmenterGraph(model).eval() if model is not None else None
        self.session, self.size, self.threshold, self.min_area = session, image_size, threshold, min_area
        self.source, self.validation = source, validation or {}
        self.runtime = "onnxruntime" if session is not None else "pytorch"
        # PyTorch: one forward pass at a time (its threads use every core). ONNX Runtime: each call on one thread and
        # without a lock, so that predict's worker threads find lesions side by side (a folder: 22 -> 25-28 images/s
        # on 2 cores: docs/throughput.md)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, engine: str | None = None) -> LesionFinder:
        """From the run's ``segmenter.pt``, on ``engine`` (default: the process's, :func:`rcdnet.runtime.engine`):
        ONNX Runtime runs a graph exported once into the cache and checked against PyTorch on fixed images (within
        :data:`ENGINE_TOLERANCE`; PyTorch, with a warning, when that fails), or PyTorch."""
        from rcdnet.runtime import engine as process_engine

        model, meta = load_segmenter(path)
        finder = cls(model, image_size=int(meta["image_size"]), threshold=float(meta["threshold"]),
                     min_area=float(meta["min_area"]), source=str(path), validation=meta.get("validation"))
        if (engine or process_engine()) == "onnxruntime":
            try:
                finder.session, finder.runtime = finder._exported(), "onnxruntime (graph exported from the checkpoint)"
            except Exception as exc:  # noqa: BLE001 (export, ONNX Runtime or the check failed: PyTorch is exact)
                warnings.warn(f"{path}: the lesion finder on ONNX Runtime is unavailable, using PyTorch "
                              f"({type(exc).__name__}: {str(exc)[:300]})", stacklevel=2)
        return finder

    def _exported(self):
        """The segmenter's graph on ONNX Runtime, from the cache (exported on first use), checked on fixed images."""
        from rcdnet.data.preprocess import default_cache_dir
        from rcdnet.models.exported import export_graph, graph_file, probe_images, session

        path = graph_file(self.graph, f"segmenter|{self.size}", default_cache_dir())
        if not path.is_file():
            export_graph(self.graph, self.size, path, ["lesion_probability"])
        exported = session(path, threads=1)
        probe = probe_images(self.size)
        with torch.inference_mode():
            want = self.graph(probe).numpy()
        got = exported.run(["lesion_probability"], {"image": probe.numpy()})[0]
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        if not diff < ENGINE_TOLERANCE:
            raise ValueError(f"{path}: the exported finder differs from PyTorch by {diff:.2g}; delete it to export "
                             "it again")
        return exported

    @classmethod
    def load_onnx(cls, path: str | Path) -> LesionFinder:
        """From an exported ``<name>.segmenter.onnx`` (``rcdnet export``), settings from its metadata."""
        import json

        from rcdnet.models.exported import session as ort_session

        try:
            session = ort_session(path, threads=1)
            meta = json.loads(session.get_modelmeta().custom_metadata_map[ONNX_METADATA_KEY])
        except Exception as exc:  # onnxruntime raises its own types for a damaged file
            raise ValueError(f"{path}: not an exported lesion finder ({type(exc).__name__}: {exc})") from None
        return cls(None, image_size=int(meta["image_size"]), threshold=float(meta["threshold"]),
                   min_area=float(meta["min_area"]), source=str(path), validation=meta.get("validation"),
                   session=session)

    def grey(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (S, S) uint8: what the network sees."""
        return cv2.resize(to_gray(rgb), (self.size, self.size), interpolation=cv2.INTER_AREA)

    def maps(self, greys: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 -> (N, S, S) float32 lesion probabilities."""
        x = np.ascontiguousarray(np.asarray(greys, np.float32)[:, None])
        if self.session is not None:  # one thread per call, calls side by side (predict's worker threads)
            return self.session.run(["lesion_probability"], {"image": x})[0]
        with self._lock:
            with torch.inference_mode():
                return self.graph(torch.from_numpy(x)).numpy()

    def probability_map(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W) float32 lesion probability on the original's pixels."""
        return self.on_original(self.maps(self.grey(rgb)[None])[0], rgb.shape[:2])

    @staticmethod
    def on_original(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)

    def finding(self, prob: np.ndarray, pixel_mm: float | None = None) -> Finding:
        """The :class:`Finding` of an (H, W) probability map on the original's pixels."""
        found = [measure(region, conf, pixel_mm) for region, conf in regions(prob, self.min_area)]
        return Finding(tuple(x for x in found if x.confidence >= self.threshold), found[0] if found else None,
                       self.threshold)

    def find(self, rgb: np.ndarray, pixel_mm: float | None = None) -> Finding:
        return self.finding(self.probability_map(rgb), pixel_mm)

    def box(self, rgb: np.ndarray) -> Box:
        """The most confident lesion's box; :class:`NoLesionFound` when none reaches the threshold."""
        f = self.find(rgb)
        if not f.found:
            raise NoLesionFound(f.refusal())
        return f.lesions[0].box


def finder_for(predictor, model: str | Path, given: str | Path | None = None) -> LesionFinder | None:
    """The lesion finder of a region-of-interest ``predictor`` loaded from ``model``: ``given`` (a run directory or a
    segmenter.pt), else the one shipped beside the model (``checkpoints/segmenter.pt``, or beside an exported
    file); None where there is none. A whole-image model asked for one is an error."""
    from rcdnet.segment.model import FILE, segmenter_beside, segmenter_onnx_beside

    roi = predictor.preprocessor.roi
    if given:
        if not roi:
            raise ValueError(f"{given}: {model} classifies whole images (it was trained without data.roi_margin), "
                             "so it needs no lesion box")
        path = Path(given) / "checkpoints" / FILE if Path(given).is_dir() else Path(given)
        if not path.is_file():
            raise FileNotFoundError(f"{given}: no lesion finder there (expected a run directory or a {FILE})")
        return LesionFinder.load(path)
    if not roi:
        return None
    if predictor.runtime == "onnxruntime":  # an exported model: its exported finder beside it
        exported = segmenter_onnx_beside(model)
        return LesionFinder.load_onnx(exported) if exported.is_file() else None
    found = segmenter_beside(model)
    return LesionFinder.load(found) if found is not None else None
