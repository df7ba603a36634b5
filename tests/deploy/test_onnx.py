"""ONNX export equals PyTorch on real images; metadata travels with the model; INT8 runs; bad files are named."""

import json

import cv2
import numpy as np
import pytest

from rcdnet.cli import main
from rcdnet.data.decode import read_image
from rcdnet.deploy.quantise import quantize_int8
from rcdnet.predict import OnnxPredictor, load_predictor, prediction_row
from rcdnet.predict import TorchPredictor as Predictor
from rcdnet.predict.onnx import read_metadata
from tests.conftest import BUSI


@pytest.fixture(scope="module")
def images(data_root, untrained_checkpoint) -> np.ndarray:
    pre = Predictor(untrained_checkpoint).preprocessor  # the checkpoint's own input size and preprocessing
    return np.stack([pre(read_image(BUSI / c / f"{c} ({i}).png")) for c in ("benign", "malignant") for i in (10, 11, 12)])


@pytest.fixture(scope="module")
def exported(exported_onnx):
    return exported_onnx


def test_onnx_matches_pytorch_with_any_batch_size(untrained_checkpoint, exported, images):
    torch_p = Predictor(untrained_checkpoint)
    onnx_p = OnnxPredictor(exported, batch_size=4)  # batches of 4 and 2: the batch axis is dynamic
    diff = np.abs(onnx_p.predict_arrays(images) - torch_p.predict_arrays(images)).max()
    assert diff < 1e-4
    assert np.abs(onnx_p.predict_arrays(images[:1]) - torch_p.predict_arrays(images[:1])).max() < 1e-4


def test_metadata_travels_with_the_model(untrained_checkpoint, exported):
    meta = read_metadata(exported)
    assert meta["classes"] == ["benign", "malignant"] and meta["thresholds"] == {"default": 0.5}
    assert meta["preprocessing"]["size"] == Predictor(untrained_checkpoint).preprocessor.size == 320
    assert meta["tta"] is True and meta["precision"] == "fp32"
    assert json.loads(exported.with_suffix(".json").read_text())["source_sha256"] == meta["source_sha256"]
    p = load_predictor(exported)
    assert isinstance(p, OnnxPredictor) and p.preprocessor == Predictor(untrained_checkpoint).preprocessor
    assert prediction_row(p, "x", np.array([0.3, 0.7]))["malignant@default"] is True


@pytest.mark.slow
def test_int8_quantisation_runs_and_stays_close(exported, images, tmp_path):
    q = quantize_int8(exported, tmp_path / "model.int8.onnx", images)
    assert read_metadata(q)["precision"] == "int8" and q.stat().st_size < 0.6 * exported.stat().st_size
    p8, p32 = OnnxPredictor(q).predict_arrays(images), OnnxPredictor(exported).predict_arrays(images)
    assert np.allclose(p8.sum(axis=1), 1, atol=1e-3) and np.abs(p8 - p32).max() < 0.15


def test_bad_onnx_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxPredictor(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not protobuf \xff\xfe")
    with pytest.raises(ValueError, match="junk.onnx"):
        OnnxPredictor(junk)


def test_export_command_verifies_against_pytorch(untrained_checkpoint, data_root, cache_dir, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(untrained_checkpoint), "--onnx", str(out), "--verify-images", "8",
                 "--data", str(data_root), "--cache", str(cache_dir)]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["verification"]["passed"] and side["verification"]["images"] == 8
    assert "max |p_onnx - p_torch|" in capsys.readouterr().out


def test_export_keeps_a_fitted_temperature_and_both_operating_points(untrained_checkpoint, images, tmp_path):
    import torch

    from rcdnet.deploy.onnx import export_onnx

    ckpt = torch.load(untrained_checkpoint, weights_only=True)
    ckpt["temperature"], ckpt["thresholds"] = 2.5, {"default": 0.5, "high_sensitivity": 0.12}
    ckpt["config"]["data"]["image_size"] = 128  # the same graph at a smaller input: a cheaper export
    torch.save(ckpt, tmp_path / "calibrated.pt")
    torch_p = Predictor(tmp_path / "calibrated.pt")
    onnx_p = OnnxPredictor(export_onnx(torch_p, tmp_path / "calibrated.onnx"))
    small = np.stack([cv2.resize(im, (128, 128), interpolation=cv2.INTER_AREA) for im in images])
    want = torch_p.predict_arrays(small)
    assert np.abs(onnx_p.predict_arrays(small) - want).max() < 1e-4
    ckpt["temperature"] = 1.0
    torch.save(ckpt, tmp_path / "t1.pt")
    assert np.abs(want - Predictor(tmp_path / "t1.pt").predict_arrays(small)).max() > 1e-3  # T really applied
    assert read_metadata(tmp_path / "calibrated.onnx")["thresholds"] == ckpt["thresholds"]
    for p in want:
        assert prediction_row(onnx_p, "x", p) == prediction_row(torch_p, "x", p)
