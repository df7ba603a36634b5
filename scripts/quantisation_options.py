"""Which INT8 quantisation to ship: AUC change and speed of each option, on validation and UDIAT.

    python scripts/quantisation_options.py RUN_DIR MODEL.onnx

MODEL.onnx comes from ``rcdnet export``. Every option quantises convolutions and matrix products with per-channel
weights, calibrated on the same 64 training images; they differ in the calibration method and in which
convolutions stay float. The rule: ship the option with the smallest absolute change of validation AUC. UDIAT is
printed for every option (reported, never used to choose).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from sklearn.metrics import roc_auc_score

from rcdnet.deploy.export import CALIBRATION_IMAGES, _split_images
from rcdnet.deploy.onnx import _TrainingImages, depthwise_convs, session
from rcdnet.evaluation.report import environment
from rcdnet.inference import Predictor


def auc_and_speed(path: Path, data: dict) -> tuple[dict, float]:
    s = session(path)

    def probs(x):
        return np.concatenate([s.run(None, {"image": x[i:i + 32, None].astype(np.float32)})[0]
                               for i in range(0, len(x), 32)])

    aucs = {k: roc_auc_score(y, probs(x)[:, 1]) for k, (x, y) in data.items() if k != "train"}
    batch = data["busi-val"][0][:32, None].astype(np.float32)
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
    data = _split_images(predictor, None, None, with_all=True)
    train = data["train"][0]
    calib = train[np.random.default_rng(0).choice(len(train), size=CALIBRATION_IMAGES, replace=False)]
    prep = fp32.with_name(fp32.stem + ".prep.onnx")
    quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=True)
    options = {
        "all convolutions, min-max calibration": {"calibrate_method": CalibrationMethod.MinMax},
        "all convolutions, 99.99th percentile": {},
        "depthwise convolutions float (shipped)": {"nodes_to_exclude": depthwise_convs(prep)},
        "depthwise and stem convolutions float": {"nodes_to_exclude": depthwise_convs(prep, with_stem=True)},
    }
    base, base_speed = auc_and_speed(fp32, data)
    env = environment()
    print(f"commit {env['commit']}, {env['date']}, {env['hardware']}; {fp32.name}, mirrored average: "
          f"{predictor.tta}\n")
    print("| option | validation AUC change | UDIAT AUC change | batch 32 images/s |\n|---|---|---|---|")
    print(f"| fp32 (AUC {base['busi-val']:.4f} / {base['udiat']:.4f}) | 0 | 0 | {base_speed:.0f} |")
    for name, kw in options.items():
        out = fp32.with_name("option.int8.onnx")
        args = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm", "MatMul"],
                    calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.99})
        args.update(kw)
        if args["calibrate_method"] != CalibrationMethod.Percentile:
            args["extra_options"] = {}
        quantize_static(str(prep), str(out), _TrainingImages(calib), **args)
        aucs, speed = auc_and_speed(out, data)
        print(f"| {name} | {aucs['busi-val'] - base['busi-val']:+.4f} | {aucs['udiat'] - base['udiat']:+.4f} | "
              f"{speed:.0f} |", flush=True)
        out.unlink()
    prep.unlink()


if __name__ == "__main__":
    main()
