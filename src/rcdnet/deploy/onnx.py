"""ONNX export of a trained checkpoint: the whole decision function after preprocessing, with its metadata.

    image          (N, 1, S, S) float32 grey levels 0..255 (the preprocessed image)
    -> :class:`~rcdnet.models.input.DecisionFunction` (normalise, model, mirror average, softmax(z / T))
    probabilities  (N, num_classes)

Preprocessing, input statistics, class names, thresholds and provenance are stored in the model's metadata
(``metadata_props``, read back by :func:`rcdnet.predict.onnx.read_metadata`) and in a JSON file beside it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from rcdnet import __version__
from rcdnet.files import file_sha256
from rcdnet.models.input import WithLesionMap
from rcdnet.predict.onnx import METADATA_KEY, ONNX_FORMAT
from rcdnet.predict.pytorch import TorchPredictor


def metadata(predictor: TorchPredictor, **extra) -> dict:
    return {"format": ONNX_FORMAT, "rcdnet_version": __version__, "classes": predictor.classes,
            "thresholds": predictor.thresholds, "temperature": predictor.temperature, "tta": predictor.tta,
            "model": predictor.model_name, "training_sources": list(predictor.training_sources),
            "input": predictor.decision.normalise.stats(),
            "preprocessing": dataclasses.asdict(predictor.preprocessor),
            "source_checkpoint": Path(predictor.source).name, "source_sha256": file_sha256(predictor.source), **extra}


def replace_metadata(onnx_path: Path, key: str, meta: dict, doc: str | None = None) -> None:
    """Store ``meta`` under ``key`` in the model, replacing its metadata (and its description with ``doc``), atomically."""
    import onnx

    m = onnx.load(str(onnx_path))
    del m.metadata_props[:]
    m.metadata_props.add(key=key, value=json.dumps(meta))
    if doc is not None:
        m.doc_string = doc
    tmp = onnx_path.with_name(onnx_path.name + ".tmp")
    onnx.save(m, str(tmp))
    os.replace(tmp, onnx_path)


def write_metadata(onnx_path: Path, meta: dict) -> None:
    """Store a classifier's ``meta`` in the model (replacing what was there) and in ``<name>.json`` beside it."""
    replace_metadata(onnx_path, METADATA_KEY, meta,
                     f"rcdnet {meta['model']}: (N,1,S,S) grey 0..255 -> (N,C) probabilities of {meta['classes']}")
    onnx_path.with_suffix(".json").write_text(json.dumps(meta, indent=1))


def export_onnx(predictor: TorchPredictor, path: str | Path, opset: int = 18) -> Path:
    """Write the decision function of ``predictor`` as ONNX (dynamic batch) with its metadata; a model with a
    localisation head gets a second output, ``lesion_map`` (:class:`~rcdnet.models.input.WithLesionMap`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = predictor.preprocessor.size
    example = torch.full((2, 1, s, s), 128.0)
    batch = torch.export.Dim("batch", min=1, max=1024)
    graph, outputs = predictor.decision.eval(), ["probabilities"]
    if getattr(predictor.model, "localiser", None) is not None:
        graph, outputs = WithLesionMap(predictor.decision).eval(), ["probabilities", "lesion_map"]
    torch.onnx.export(graph, (example,), str(path), input_names=["image"], output_names=outputs,
                      dynamic_shapes={"image": {0: batch}}, opset_version=opset, external_data=False, dynamo=True,
                      verbose=False)
    write_metadata(path, metadata(predictor, precision="fp32", outputs=outputs))
    return path
