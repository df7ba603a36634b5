"""The automatic region-of-interest mode: a model with a localisation head finds the lesion, and its box is what a
region-of-interest model classifies (instead of a box the sonographer drew)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from rcdnet.data.boxes import Box, box_of_mask
from rcdnet.data.decode import ImageReadError, read_image
from rcdnet.data.preprocess import lesion_box
from rcdnet.data.samples import DataProblem, Sample
from rcdnet.predict.onnx import OnnxPredictor
from rcdnet.predict.pytorch import TorchPredictor
from rcdnet.runtime import parallel_map

THRESHOLD = 0.5  # lesion probability that makes a pixel part of the found lesion


class Localiser:
    """``box(rgb)``: (H, W, 3) uint8 original -> the box around the lesion the model finds, on the original's pixels.

    The map of the model's localisation head (:meth:`TorchPredictor.localise`) is laid back onto the original
    (undoing the squash or letterbox), thresholded at :data:`THRESHOLD`, and the largest connected region kept; where
    no pixel reaches the threshold, the region above half the map's maximum is taken, so there is always a box."""

    def __init__(self, model: str):
        self.predictor = OnnxPredictor(model) if str(model).endswith(".onnx") else TorchPredictor(model)
        has = (self.predictor.has_localiser if isinstance(self.predictor, OnnxPredictor)
               else getattr(self.predictor.model, "localiser", None) is not None)
        if not has:
            raise ValueError(f"{model}: has no localisation head (train it with train.localise_weight > 0)")
        self.source = self.predictor.source

    def probability_map(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W) float32 lesion probability on the original's pixels."""
        pre = self.predictor.preprocessor
        return pre.to_original(self.predictor.localise(pre(rgb)[None])[0], rgb.shape[:2])

    def box(self, rgb: np.ndarray) -> Box:
        return region_box(self.probability_map(rgb))


def needs_roi(predictor, option: str, model: str) -> None:
    """``option`` (a lesion box, given or found) means something to a region-of-interest model only: else an error."""
    if predictor.preprocessor.roi_margin <= 0:
        raise ValueError(f"{option}: {model} classifies whole images (it was trained without data.roi_margin)")


def region_box(prob: np.ndarray) -> Box:
    """The box around the largest connected region of ``prob`` (H, W) at or above :data:`THRESHOLD` (else above half
    its maximum)."""
    cut = THRESHOLD if prob.max() >= THRESHOLD else prob.max() / 2
    n, labels, stats, _ = cv2.connectedComponentsWithStats((prob >= cut).astype(np.uint8), connectivity=8)
    if n <= 1:  # a flat map: the whole image
        return 0, 0, prob.shape[1], prob.shape[0]
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return box_of_mask(labels == largest)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def locate(localiser: Localiser, samples: list[Sample]) -> tuple[list[Sample], dict, list[DataProblem]]:
    """Every sample with the box the localiser finds (replacing any it had), and how well those boxes agree with
    the samples' lesion masks where they have one: mean box IoU and the share of lesions found (IoU >= 0.5)."""
    def find(s: Sample):
        try:
            rgb = read_image(s.path)
            found = localiser.box(rgb)
            truth = lesion_box(dataclasses.replace(s, box=None), rgb.shape[:2]) if s.mask_paths else None
        except ImageReadError as exc:
            return DataProblem(str(s.path), str(exc).removeprefix(f"{s.path}: "))
        return dataclasses.replace(s, box=found), (None if truth is None else box_iou(found, truth))

    located, ious, problems = [], [], []
    for item in parallel_map(find, samples):
        if isinstance(item, DataProblem):
            problems.append(item)
            continue
        located.append(item[0])
        if item[1] is not None:
            ious.append(item[1])
    summary = {"localiser": localiser.source, "with_masks": len(ious),
               "mean_box_iou": float(np.mean(ious)) if ious else None,
               "found_iou_0.5": float(np.mean(np.array(ious) >= 0.5)) if ious else None}
    return located, summary, problems
