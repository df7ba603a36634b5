"""The lesion finder's ONNX export: ``<name>.segmenter.onnx`` beside the exported classifier, verified against
PyTorch, so that an exported model answers an image without a box as the run does.

    image               (N, 1, S, S) float32 grey levels 0..255 (the whole image, grey, squashed to S x S)
    lesion_probability  (N, S, S)

Its settings (square size, the "lesion found" threshold, the smallest region, the validation numbers) travel in the
model's metadata (``rcdnet_segmenter``), read back by :meth:`rcdnet.segment.finder.LesionFinder.load_onnx`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from rcdnet import __version__
from rcdnet.deploy.onnx import replace_metadata
from rcdnet.segment.finder import LesionFinder
from rcdnet.segment.model import ONNX_METADATA_KEY, segmenter_onnx_beside

MAX_ABS_DIFF = 1e-4  # lesion probabilities, ONNX Runtime fp32 vs PyTorch


def export_finder(segmenter_pt: str | Path, classifier_onnx: str | Path, greys: np.ndarray, opset: int = 18,
                  report=print) -> Path:
    """Export the run's finder beside ``classifier_onnx``; verified on ``greys`` (M, S, S) uint8 (whole images as the
    finder sees them) and a ramp: raises ValueError when a probability differs by ``MAX_ABS_DIFF`` or more."""
    finder = LesionFinder.load(segmenter_pt, engine="pytorch")  # the reference the export is checked against
    out = segmenter_onnx_beside(classifier_onnx)
    s = finder.size
    tmp = out.with_name(out.name + ".tmp")
    torch.onnx.export(finder.graph, (torch.full((2, 1, s, s), 128.0),), str(tmp), input_names=["image"],
                      output_names=["lesion_probability"],
                      dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=1024)}},
                      opset_version=opset, external_data=False, dynamo=True, verbose=False)
    meta = {"format": "rcdnet-segmenter-onnx-1", "rcdnet_version": __version__, "image_size": s,
            "threshold": finder.threshold, "min_area": finder.min_area, "validation": finder.validation,
            "source_checkpoint": Path(segmenter_pt).name}
    replace_metadata(tmp, ONNX_METADATA_KEY, meta,
                     "rcdnet lesion finder: (N,1,S,S) grey 0..255 -> (N,S,S) lesion probability")
    os.replace(tmp, out)
    ramp = np.tile(np.linspace(0, 255, s, dtype=np.float32), (s, 1)).astype(np.uint8)[None]
    probe = np.concatenate([greys, ramp]) if len(greys) else ramp
    diff = float(np.abs(LesionFinder.load_onnx(out).maps(probe) - finder.maps(probe)).max())
    report(f"{out}: {out.stat().st_size / 2**20:.1f} MB; verified on {len(probe)} images: max |lesion probability "
           f"onnx - torch| = {diff:.2e} ({'ok' if diff < MAX_ABS_DIFF else 'FAILED'}, tolerance {MAX_ABS_DIFF:g})")
    if diff >= MAX_ABS_DIFF:
        out.unlink()
        raise ValueError(f"{out}: the exported lesion finder differs from PyTorch by {diff:.2e}")
    return out


def quantise_finder(fp32: Path, int8: Path, calibration: np.ndarray, val: list, report=print) -> dict:
    """An INT8 copy of the exported finder at ``int8`` (static, calibrated on ``calibration`` (M, S, S) uint8 training
    images as the finder sees them; never validation ones), and what it changes on the ``val`` samples (lesion images
    with masks, and normal ones): lesion found, box IoU >= 0.5 and Dice, fp32 beside INT8, at the shipped threshold."""
    from rcdnet.deploy.quantise import quantize_int8
    from rcdnet.evaluation.finder import evaluate_finder

    quantize_int8(fp32, int8, calibration)
    keys = ("found", "box_iou_0.5", "dice", "no_lesion_on_normal")
    both = {name: evaluate_finder(LesionFinder.load_onnx(path), val, None, n_boot=0)
            for name, path in (("fp32", fp32), ("int8", int8))}
    out = {name: {k: v[k] for k in keys if k in v} for name, v in both.items()}
    report(f"{int8}: {int8.stat().st_size / 2**20:.1f} MB (calibrated on {len(calibration)} training images); on "
           f"{both['fp32']['lesion_images']} validation lesion images, fp32 -> int8: "
           + ", ".join(f"{k} {out['fp32'][k]:.3f} -> {out['int8'][k]:.3f}" for k in keys if k in out["int8"]))
    return out
