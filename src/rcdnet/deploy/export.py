"""``rcdnet export``: write the ONNX model, prove it equals PyTorch on real validation images, and optionally
quantise it to INT8, reporting what quantisation does to AUC on validation and UDIAT."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from rcdnet.data.preprocess import preprocess_samples
from rcdnet.data.readers import load_dataset
from rcdnet.deploy.onnx import OnnxPredictor, export_onnx, quantize_int8
from rcdnet.inference import Predictor, resolve_checkpoint

MAX_ABS_DIFF = 1e-4  # probabilities, ONNX Runtime fp32 vs PyTorch
CALIBRATION_IMAGES = 64


def split_images(predictor: Predictor, data: str | None, cache: str | None, with_all: bool
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Preprocessed images and malignant labels of the run's validation split and, ``with_all``, of its training
    pool and external test sets."""
    classes = tuple(predictor.classes)
    busi, _ = load_dataset(predictor.config["data"]["dataset"], data, classes=classes)
    val = set(predictor.val_keys)
    parts = {"busi-val": [s for s in busi if s.key in val]}
    if with_all:
        parts["train"] = [s for s in busi if s.key not in val]
        parts.update({n: load_dataset(n, data, classes=classes)[0]
                      for n in predictor.config["data"].get("external") or []})
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


def export_command(args) -> int:
    ckpt = resolve_checkpoint(args.checkpoint)
    predictor = Predictor(ckpt, tta=False if args.no_tta else None)
    if not predictor.val_keys:
        raise ValueError(f"{ckpt}: the checkpoint holds no validation split to verify the export on")
    out = Path(args.onnx)
    export_onnx(predictor, out)
    data = split_images(predictor, args.data, args.cache, with_all=args.int8)
    val_images = data["busi-val"][0][: args.verify_images]
    fp32 = OnnxPredictor(out)
    diff = float(np.abs(fp32.predict_arrays(val_images) - predictor.predict_arrays(val_images)).max())
    ok = diff < MAX_ABS_DIFF
    _update_sidecar(out, verification={"images": len(val_images), "max_abs_diff_probability": diff,
                                       "tolerance": MAX_ABS_DIFF, "passed": ok})
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MB; verified on {len(val_images)} validation images: "
          f"max |p_onnx - p_torch| = {diff:.2e} ({'ok' if ok else 'FAILED'}, tolerance {MAX_ABS_DIFF:g})")
    if not ok:
        print(f"rcdnet export: error: the ONNX model differs from PyTorch by {diff:.2e}", file=sys.stderr)
        return 1
    if args.int8:
        q = out.with_name(out.stem + ".int8.onnx")
        rng = np.random.default_rng(0)
        train = data["train"][0]
        # ONNX Runtime's calibrator keeps every intermediate tensor of every calibration image in memory (256
        # images exhausted 24 GB here), so a modest, seeded sample of training images
        calib = train[rng.choice(len(train), size=min(CALIBRATION_IMAGES, len(train)), replace=False)]
        quantize_int8(out, q, calib)
        int8 = OnnxPredictor(q)
        report = {}
        for name, (images, y) in data.items():
            if name == "train":
                continue
            p32 = fp32.predict_arrays(images)[:, fp32.malignant_index]
            p8 = int8.predict_arrays(images)[:, int8.malignant_index]
            a32, a8 = roc_auc_score(y, p32), roc_auc_score(y, p8)
            d = np.abs(p8 - p32)
            report[name] = {"n": len(y), "auc_fp32": a32, "auc_int8": a8, "auc_change": a8 - a32,
                            "p_abs_diff_median": float(np.median(d)), "p_abs_diff_max": float(d.max())}
            print(f"{name:9s} n={len(y):4d}  AUC fp32 {a32:.4f}  int8 {a8:.4f}  change {a8 - a32:+.4f}  "
                  f"|p_int8 - p_fp32| median {np.median(d):.3f}, max {d.max():.3f}")
        _update_sidecar(q, quantisation=report)
        print(f"{q}: {q.stat().st_size / 2**20:.1f} MB (calibrated on {len(calib)} training images)")
    print(f"metadata: {out.with_suffix('.json')}")
    return 0
