"""Every model kind behind one Predictor interface; ensemble files are checked as strictly as checkpoints."""

import json
from pathlib import Path

import numpy as np
import pytest

from rcdnet.cli import main
from rcdnet.data.decode import read_image
from rcdnet.predict import (
    EnsemblePredictor,
    OnnxPredictor,
    Predictor,
    TorchPredictor,
    load_predictor,
)
from tests.conftest import BUSI


@pytest.fixture(scope="module")
def ensemble_dir(untrained_checkpoint, tmp_path_factory):
    d = tmp_path_factory.mktemp("ens")
    (d / "ensemble.json").write_text(json.dumps({"format": "rcdnet-ensemble/1", "members": [
        str(untrained_checkpoint), str(untrained_checkpoint)], "thresholds": {"default": 0.5, "high_sensitivity": 0.2}}))
    return d


def test_each_kind_is_a_predictor_with_the_same_answers(untrained_checkpoint, exported_onnx, ensemble_dir,
                                                        data_root):
    torch_p = load_predictor(untrained_checkpoint)
    onnx_p = load_predictor(exported_onnx)
    ens = load_predictor(ensemble_dir)
    assert [type(p) for p in (torch_p, onnx_p, ens)] == [TorchPredictor, OnnxPredictor, EnsemblePredictor]
    images = np.stack([torch_p.preprocessor(read_image(BUSI / "benign" / f"benign ({i}).png")) for i in (1, 2)])
    for p in (torch_p, onnx_p, ens):
        assert isinstance(p, Predictor), type(p)
        assert p.model_name == "rcdnet" and p.classes == ["benign", "malignant"] and p.malignant_index == 1
        assert np.abs(p.predict_arrays(images) - torch_p.predict_arrays(images)).max() < 1e-4, p.runtime
    assert {p.runtime for p in (torch_p, onnx_p, ens)} == {"pytorch", "onnxruntime", "pytorch ensemble"}
    assert ens.thresholds == {"default": 0.5, "high_sensitivity": 0.2}


def test_onnx_exported_before_the_input_record_still_loads(untrained_checkpoint, exported_onnx, tmp_path, data_root):
    import shutil

    from rcdnet.deploy.onnx import write_metadata
    from rcdnet.predict.onnx import read_metadata

    torch_p = TorchPredictor(untrained_checkpoint)
    path = Path(shutil.copy(exported_onnx, tmp_path / "old.onnx"))
    meta = read_metadata(path)
    for key in ("input", "training_sources"):  # what metadata of rcdnet-onnx/1 files written before lacked
        meta.pop(key)
    write_metadata(path, meta)
    images = torch_p.preprocessor(read_image(BUSI / "malignant" / "malignant (1).png"))[None]
    assert np.abs(OnnxPredictor(path).predict_arrays(images) - torch_p.predict_arrays(images)).max() < 1e-4


@pytest.mark.parametrize("spec, problem", [
    ({"format": "rcdnet-ensemble/1", "members": []}, "not an rcdnet ensemble"),
    ({"format": "rcdnet-ensemble/1", "members": [{"$ref": "x"}]}, "not an rcdnet ensemble"),
    ({"format": "other", "members": ["a.pt"]}, "not an rcdnet ensemble"),
    ({"format": "rcdnet-ensemble/1", "members": ["a.pt"], "thresholds": {"default": "high"}}, "thresholds must"),
    ([1, 2], "not an rcdnet ensemble"),
])
def test_bad_ensemble_files_are_named(tmp_path, spec, problem):
    f = tmp_path / "ensemble.json"
    f.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=f"ensemble.json: {problem}"):
        EnsemblePredictor(f)


def test_test_time_options_an_ensemble_cannot_take_are_errors(ensemble_dir, capsys):
    for flag in ("--tta", "--adabn"):
        assert main(["evaluate", str(ensemble_dir), flag]) == 2
        assert "test-time variants of one checkpoint" in capsys.readouterr().err
