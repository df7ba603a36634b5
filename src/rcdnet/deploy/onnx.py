"""ONNX export of a trained model, verified against PyTorch, optional INT8 quantisation, and an ONNX Runtime
predictor with the same interface as :class:`rcdnet.inference.Predictor`.

The exported graph is the whole decision function after preprocessing:

    image          (N, 1, S, S) float32 grey levels 0..255 (the preprocessed image)
    -> 3 channels, normalised with the backbone's mean/std
    -> model logits (averaged with the mirrored image when the checkpoint uses test-time mirroring)
    -> softmax(logits / temperature)
    probabilities  (N, num_classes)

Preprocessing (resize, denoising, CLAHE), class names, thresholds and provenance are stored in the model's
metadata (``metadata_props``) and in a JSON file beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rcdnet import __version__
from rcdnet.data.preprocess import Preprocessor
from rcdnet.inference import Predictor, describe_prediction

METADATA_KEY = "rcdnet"


class DecisionFunction(nn.Module):
    """(N, 1, S, S) grey levels 0..255 -> (N, C) calibrated probabilities, exactly as ``Predictor`` computes."""

    def __init__(self, predictor: Predictor):
        super().__init__()
        self.model = predictor.model
        self.register_buffer("mean", predictor.mean.clone())
        self.register_buffer("std", predictor.std.clone())
        self.temperature = float(predictor.temperature)
        self.tta = bool(predictor.tta)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image.expand(-1, 3, -1, -1) / 255.0 - self.mean) / self.std
        if self.tta:  # the image and its mirror in one batch: one pass of 2N instead of two of N
            z = self.model(torch.cat([x, torch.flip(x, dims=[3])]))
            z = z.reshape(2, -1, z.shape[-1]).mean(dim=0)  # keeps the batch axis dynamic in the export
        else:
            z = self.model(x)
        return torch.softmax(z / self.temperature, dim=1)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def metadata(predictor: Predictor, **extra) -> dict:
    return {"format": "rcdnet-onnx/1", "rcdnet_version": __version__, "classes": predictor.classes,
            "thresholds": predictor.thresholds, "temperature": predictor.temperature, "tta": predictor.tta,
            "model": predictor.config["model"]["name"], "preprocessing": dataclasses.asdict(predictor.preprocessor),
            "source_checkpoint": Path(predictor.checkpoint_path).name,
            "source_sha256": file_sha256(predictor.checkpoint_path) if predictor.checkpoint_path else "", **extra}


def _write_metadata(onnx_path: Path, meta: dict) -> None:
    import onnx

    m = onnx.load(str(onnx_path))
    del m.metadata_props[:]
    m.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta))
    m.doc_string = f"rcdnet {meta['model']}: (N,1,S,S) grey 0..255 -> (N,C) probabilities of {meta['classes']}"
    tmp = onnx_path.with_name(onnx_path.name + ".tmp")
    onnx.save(m, str(tmp))
    os.replace(tmp, onnx_path)
    onnx_path.with_suffix(".json").write_text(json.dumps(meta, indent=1))


def export_onnx(predictor: Predictor, path: str | Path, opset: int = 18) -> Path:
    """Write the decision function of ``predictor`` as ONNX (dynamic batch) with its metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = predictor.preprocessor.size
    fn = DecisionFunction(predictor).eval()
    example = torch.full((2, 1, s, s), 128.0)
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(fn, (example,), str(path), input_names=["image"], output_names=["probabilities"],
                      dynamic_shapes={"image": {0: batch}}, opset_version=opset, external_data=False, dynamo=True,
                      verbose=False)
    _write_metadata(path, metadata(predictor, precision="fp32"))
    return path


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
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
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
    meta = read_metadata(fp32_path)
    meta.update(precision="int8", calibration_images=int(len(calibration)))
    _write_metadata(int8_path, meta)
    return int8_path


def read_metadata(path: str | Path) -> dict:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in m.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path}: an ONNX model without rcdnet metadata (export it with `rcdnet export`)")
    return json.loads(props[METADATA_KEY])


def session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session with full graph optimisation; ``threads`` 0 = one per core."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxPredictor:
    """An exported model on ONNX Runtime: ``predict_arrays`` (N, S, S) uint8 -> (N, C) probabilities, plus the
    classes, thresholds, preprocessing and ``describe`` of :class:`rcdnet.inference.Predictor`."""

    def __init__(self, path: str | Path, batch_size: int = 32, threads: int = 0):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        try:
            meta = read_metadata(path)
        except ValueError:
            raise
        except Exception as exc:  # onnx raises protobuf DecodeError and others for a damaged file
            raise ValueError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
        self.checkpoint_path = str(path)
        self.metadata = meta
        self.classes: list[str] = list(meta["classes"])
        self.thresholds: dict[str, float] = dict(meta["thresholds"])
        self.temperature = float(meta["temperature"])
        self.tta = bool(meta["tta"])
        self.preprocessor = Preprocessor(**meta["preprocessing"])
        self.malignant_index = self.classes.index("malignant")
        self.batch_size = batch_size
        self.session = session(path, threads)

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        out = [self.session.run(None, {"image": images[i:i + self.batch_size, None].astype(np.float32)})[0]
               for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def describe(self, name: str, probs: np.ndarray) -> dict:
        return describe_prediction(self, name, probs)
