"""Static INT8 quantisation of an exported model with ONNX Runtime, calibrated on training images only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rcdnet.deploy.onnx import replace_metadata, write_metadata
from rcdnet.predict.onnx import read_metadata


class _TrainingImages:
    """ONNX Runtime calibration reader: batches of preprocessed training images (never validation or test)."""

    def __init__(self, images: np.ndarray, batch: int = 16):
        self.batches = [images[i:i + batch, None].astype(np.float32) for i in range(0, len(images), batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {"image": self.batches[self.i - 1]}

    def rewind(self):
        self.i = 0


def depthwise_convs(path: str | Path, with_stem: bool = False) -> list[str]:
    """Names of the depthwise convolutions (one filter per channel: the layers that lose most to 8-bit
    activations), kept in float by default; ``with_stem`` adds the stem (3 input channels)."""
    import onnx

    m = onnx.load(str(path))
    shapes = {t.name: tuple(t.dims) for t in m.graph.initializer}
    out = []
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        w = shapes.get(n.input[1], ())
        if group > 1 or (with_stem and len(w) == 4 and w[1] == 3):
            out.append(n.name)
    return out


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, calibration: np.ndarray,
                  keep_float: str = "depthwise", calibration_method: str = "percentile") -> Path:
    """Static INT8 quantisation of the convolutions and matrix products (QDQ, per-channel weights, 8-bit
    activations) calibrated on ``calibration`` (M, S, S) uint8 preprocessed training images; the normalisation,
    attention gates and softmax stay float, so probabilities are not rounded to 1/255 steps.

    ``keep_float``: convolutions left in float, ``depthwise`` (default: the option with the smallest validation
    AUC change, scripts/quantisation_options.py), ``depthwise+stem`` or ``none``. ``calibration_method``:
    ``percentile`` (99.99th) or ``minmax``. Metadata is carried over with ``precision: int8``."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if keep_float not in ("depthwise", "depthwise+stem", "none"):
        raise ValueError(f"keep_float must be depthwise, depthwise+stem or none, got {keep_float!r}")
    methods = {"percentile": (CalibrationMethod.Percentile, {"CalibPercentile": 99.99}),
               "minmax": (CalibrationMethod.MinMax, {})}
    if calibration_method not in methods:
        raise ValueError(f"calibration_method must be percentile or minmax, got {calibration_method!r}")
    method, options = methods[calibration_method]
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    prepared = int8_path.with_name(int8_path.stem + ".prep.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    try:
        excluded = [] if keep_float == "none" else depthwise_convs(prepared, with_stem=keep_float.endswith("stem"))
        quantize_static(str(prepared), str(int8_path), _TrainingImages(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "Gemm", "MatMul"],  # the softmax output stays float
                        nodes_to_exclude=excluded, calibrate_method=method, extra_options=options)
    finally:
        prepared.unlink(missing_ok=True)
    _carry_metadata(fp32_path, int8_path, len(calibration))
    return int8_path


def _carry_metadata(fp32_path: Path, int8_path: Path, n_calibration: int) -> None:
    """The fp32 model's rcdnet metadata on the INT8 copy, with ``precision: int8``: a classifier's (and its
    ``.json`` sidecar) or a lesion finder's."""
    import onnx

    from rcdnet.segment.model import ONNX_METADATA_KEY

    props = {p.key: p.value for p in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
    if ONNX_METADATA_KEY not in props:  # a classifier
        meta = read_metadata(fp32_path)
        meta.update(precision="int8", calibration_images=n_calibration)
        write_metadata(int8_path, meta)
        return
    replace_metadata(int8_path, ONNX_METADATA_KEY,
                     {**json.loads(props[ONNX_METADATA_KEY]), "precision": "int8", "calibration_images": n_calibration})
