"""Which INT8 quantisation to ship: AUC change and speed of each option, on validation and UDIAT.

    python scripts/quantisation_options.py RUN_DIR MODEL.onnx

MODEL.onnx comes from ``rcdnet export``. Every option is ``rcdnet.deploy.quantise.quantize_int8`` (convolutions and
matrix products, per-channel weights) calibrated on the same 64 training images; they differ in the calibration
method and in which convolutions stay float. The rule: ship the option with the smallest absolute change of
validation AUC. UDIAT is printed for every option (reported, never used to choose).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from rcdnet.data.inputs import VALIDATION
from rcdnet.deploy.export import CALIBRATION_IMAGES, split_images
from rcdnet.deploy.quantise import quantize_int8
from rcdnet.runtime import environment
from rcdnet.models.exported import session
from rcdnet.predict.pytorch import TorchPredictor as Predictor

OPTIONS = {  # name -> quantize_int8 keyword arguments
    "all convolutions, min-max calibration": {"keep_float": "none", "calibration_method": "minmax"},
    "all convolutions, 99.99th percentile": {"keep_float": "none"},
    "depthwise convolutions float (shipped)": {"keep_float": "depthwise"},
    "depthwise and stem convolutions float": {"keep_float": "depthwise+stem"},
}


def auc_and_speed(path: Path, data: dict) -> tuple[dict, float]:
    s = session(path)

    def probs(x):
        return np.concatenate([s.run(None, {"image": x[i:i + 32, None].astype(np.float32)})[0]
                               for i in range(0, len(x), 32)])

    aucs = {k: roc_auc_score(y, probs(x)[:, 1]) for k, (x, y) in data.items() if k != "train"}
    batch = data[VALIDATION][0][:32, None].astype(np.float32)
    s.run(None, {"image": batch})
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        s.run(None, {"image": batch})
        times.append(time.perf_counter() - t0)
    return aucs, 32 / statistics.median(times)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    run_dir, fp32 = sys.argv[1], Path(sys.argv[2])
    predictor = Predictor(run_dir)
    data = split_images(predictor, None, None, with_all=True)
    train = data["train"][0]
    calib = train[np.random.default_rng(0).choice(len(train), size=CALIBRATION_IMAGES, replace=False)]
    base, base_speed = auc_and_speed(fp32, data)
    env = environment()
    print(f"commit {env['commit']}, {env['date']}, {env['hardware']}; {fp32.name}, mirrored average: "
          f"{predictor.tta}\n")
    print("| option | validation AUC change | UDIAT AUC change | batch 32 images/s |\n|---|---|---|---|")
    print(f"| fp32 (AUC {base[VALIDATION]:.4f} / {base['udiat']:.4f}) | 0 | 0 | {base_speed:.0f} |")
    for name, kw in OPTIONS.items():
        out = fp32.with_name("option.int8.onnx")
        quantize_int8(fp32, out, calib, **kw)
        aucs, speed = auc_and_speed(out, data)
        print(f"| {name} | {aucs[VALIDATION] - base[VALIDATION]:+.4f} | {aucs['udiat'] - base['udiat']:+.4f} | "
              f"{speed:.0f} |", flush=True)
        out.unlink()
        out.with_suffix(".json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
