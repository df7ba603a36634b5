"""``rcdnet export``: write the ONNX model, prove it equals PyTorch on real validation images, and optionally
quantise it to INT8, reporting what quantisation does to AUC on validation and the external sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from rcdnet.data.inputs import VALIDATION, named_dataset
from rcdnet.data.preprocess import preprocess_samples
from rcdnet.data.sources import load_dataset, load_sources
from rcdnet.deploy.onnx import export_onnx
from rcdnet.deploy.quantise import quantize_int8
from rcdnet.predict.onnx import OnnxPredictor
from rcdnet.predict.pytorch import TorchPredictor

MAX_ABS_DIFF = 1e-4  # probabilities, ONNX Runtime fp32 vs PyTorch
CALIBRATION_IMAGES = 64


class ExportError(RuntimeError):
    """The exported model does not reproduce PyTorch within the tolerance."""


def split_images(predictor: TorchPredictor, data: str | None, cache: str | None, with_all: bool
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Preprocessed images and malignant labels of the run's validation split and, ``with_all``, of its training
    pool and external test sets."""
    classes = tuple(predictor.classes)
    val, _ = named_dataset(VALIDATION, data, predictor)
    parts = {VALIDATION: val}
    if with_all:
        pool, _ = load_sources(predictor.training_sources, data, classes)
        keys = set(predictor.val_keys)
        parts["train"] = [s for s in pool if s.key not in keys]
        parts.update({n: load_dataset(n, data, classes=classes)[0] for n in predictor.config.data.external})
    out = {}
    for name, samples in parts.items():
        kept, images, _ = preprocess_samples(samples, predictor.preprocessor, cache)
        out[name] = images, np.array([s.label == "malignant" for s in kept], int)
    return out


def _update_sidecar(onnx_path: Path, **fields) -> None:
    side = onnx_path.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta.update(fields)
    side.write_text(json.dumps(meta, indent=1))


def quantisation_report(fp32: OnnxPredictor, int8: OnnxPredictor, data: dict, report=print) -> dict:
    """AUC of the fp32 and INT8 models on every evaluation set (not the training pool) and how far p moves."""
    out = {}
    for name, (images, y) in data.items():
        if name == "train":
            continue
        p32 = fp32.predict_arrays(images)[:, fp32.malignant_index]
        p8 = int8.predict_arrays(images)[:, int8.malignant_index]
        a32, a8 = roc_auc_score(y, p32), roc_auc_score(y, p8)
        d = np.abs(p8 - p32)
        out[name] = {"n": len(y), "auc_fp32": a32, "auc_int8": a8, "auc_change": a8 - a32,
                     "p_abs_diff_median": float(np.median(d)), "p_abs_diff_max": float(d.max())}
        report(f"{name:9s} n={len(y):4d}  AUC fp32 {a32:.4f}  int8 {a8:.4f}  change {a8 - a32:+.4f}  "
               f"|p_int8 - p_fp32| median {np.median(d):.3f}, max {d.max():.3f}")
    return out


def export_model(checkpoint: str | Path, onnx_path: str | Path, *, data: str | None = None,
                 cache: str | None = None, int8: bool = False, verify_images: int = 64, tta: bool | None = None,
                 report=print) -> Path:
    """Export, verify on ``verify_images`` validation images (raises :class:`ExportError` beyond the tolerance)
    and, ``int8``, quantise on seeded training images. Returns the fp32 model's path."""
    predictor = TorchPredictor(checkpoint, tta=tta)
    if not predictor.val_keys:
        raise ValueError(f"{predictor.source}: the checkpoint holds no validation split to verify the export on")
    out = export_onnx(predictor, onnx_path)
    images = split_images(predictor, data, cache, with_all=int8)
    val_images = images[VALIDATION][0][:verify_images]
    fp32 = OnnxPredictor(out)
    diff = float(np.abs(fp32.predict_arrays(val_images) - predictor.predict_arrays(val_images)).max())
    if fp32.has_localiser:  # the lesion map is verified like the probabilities
        diff = max(diff, float(np.abs(fp32.localise(val_images) - predictor.localise(val_images)).max()))
    ok = diff < MAX_ABS_DIFF
    _update_sidecar(out, verification={"images": len(val_images), "max_abs_diff_probability": diff,
                                       "tolerance": MAX_ABS_DIFF, "passed": ok})
    what = "|p_onnx - p_torch| and |lesion map_onnx - _torch|" if fp32.has_localiser else "|p_onnx - p_torch|"
    report(f"{out}: {out.stat().st_size / 2**20:.1f} MB; verified on {len(val_images)} validation images: "
           f"max {what} = {diff:.2e} ({'ok' if ok else 'FAILED'}, tolerance {MAX_ABS_DIFF:g})")
    if not ok:
        raise ExportError(f"the ONNX model differs from PyTorch by {diff:.2e}")
    q = out.with_name(out.stem + ".int8.onnx") if int8 else None
    if q is not None:
        train = images["train"][0]
        # ONNX Runtime's calibrator keeps every intermediate tensor of every calibration image in memory (256
        # images exhausted 24 GB here), so a modest, seeded sample of training images
        pick = np.random.default_rng(0).choice(len(train), size=min(CALIBRATION_IMAGES, len(train)), replace=False)
        quantize_int8(out, q, train[pick])
        _update_sidecar(q, quantisation=quantisation_report(fp32, OnnxPredictor(q), images, report))
        report(f"{q}: {q.stat().st_size / 2**20:.1f} MB (calibrated on {len(pick)} training images)")
    report(f"metadata: {out.with_suffix('.json')}")
    _export_finder(predictor, out, data, verify_images, report, int8_beside=q)
    return out


def _export_finder(predictor: TorchPredictor, out: Path, data: str | None, n: int, report,
                   int8_beside: Path | None = None) -> None:
    """The run's lesion finder, if it ships one, exported beside the classifier and verified on validation
    images (whole, as the finder sees them); with ``int8_beside`` (the INT8 classifier) an INT8 finder beside that,
    calibrated on training images, and what INT8 changes on the validation images in its sidecar."""
    from rcdnet.data.decode import ImageReadError, read_image
    from rcdnet.deploy.finder import export_finder, quantise_finder
    from rcdnet.segment.finder import LesionFinder
    from rcdnet.segment.model import segmenter_beside, segmenter_onnx_beside

    seg = segmenter_beside(predictor.source) if predictor.preprocessor.roi else None
    if seg is None:
        return
    finder = LesionFinder.load(seg, engine="pytorch")  # only its input size is needed here

    def greys(samples: list, k: int) -> tuple[list, np.ndarray]:
        """The first ``k`` readable ``samples`` and their (k, S, S) uint8 finder inputs (unreadable files skipped,
        as every evaluation skips them)."""
        kept, out = [], []
        for s in samples:
            if len(kept) == k:
                break
            try:
                out.append(finder.grey(read_image(s.path)))
            except ImageReadError as exc:
                report(f"skipped {exc}")
                continue
            kept.append(s)
        return kept, np.stack(out).astype(np.uint8) if out else np.zeros((0, finder.size, finder.size), np.uint8)

    val, val_greys = greys(named_dataset(VALIDATION, data, predictor)[0], n)
    fp32 = export_finder(seg, out, val_greys, report=report)
    if int8_beside is not None:
        pool, _ = load_sources(predictor.training_sources, data, tuple(predictor.classes))
        train = [s for s in pool if s.key not in set(predictor.val_keys)]
        pick = np.random.default_rng(0).choice(len(train), size=min(CALIBRATION_IMAGES, len(train)), replace=False)
        _, calibration = greys([train[i] for i in pick], CALIBRATION_IMAGES)  # an unreadable one is left out
        changes = quantise_finder(fp32, segmenter_onnx_beside(int8_beside), calibration, val, report)
        _update_sidecar(int8_beside, finder_quantisation={"validation_images": len(val), **changes})
