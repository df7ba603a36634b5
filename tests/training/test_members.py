"""``train.members``: a seed ensemble trained for real on a small BUSI subset, shipped as one model whose
probabilities are the mean of its members' (CPU, about a minute)."""

import json

import numpy as np
import pytest

from rcdnet.cli import main
from rcdnet.predict.pytorch import TorchPredictor
from tests.conftest import TEST_SIZE

pytestmark = pytest.mark.slow


def test_a_seed_ensemble_trains_ships_and_predicts_as_one_model(tmp_path, data_root, cache_dir, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(data_root), "--out", str(out), "--epochs", "1", "--limit", "60", "--cache",
            str(cache_dir), "--set", "data.sources=[busi]", "--set", "data.external=[]", "--set", "train.members=2",
            "--set", "segment.epochs=0", "--set", "eval.bootstrap=100", "--set", "train.batch_size=16", "--set",
            TEST_SIZE, "--quiet"]
    assert main(args) == 0
    members = [out / "members" / f"seed{k}" for k in (0, 1)]
    assert all((m / "checkpoints" / "best.pt").is_file() for m in members)
    assert [h["member"] for h in json.loads((out / "history.json").read_text())] == [0, 1]
    assert "a seed ensemble of 2 such models" in (out / "report.md").read_text()

    ens, parts = TorchPredictor(out), [TorchPredictor(m) for m in members]
    assert [p.config.seed for p in parts] == [0, 1] and ens.config.train.members == 2
    images = np.random.default_rng(0).integers(0, 256, (6, ens.preprocessor.size, ens.preprocessor.size), np.uint8)
    mean = np.mean([p.probabilities(p.logits_arrays(images), 1.0) for p in parts], axis=0)
    assert np.abs(parts[0].predict_arrays(images) - parts[1].predict_arrays(images)).max() > 1e-4  # they differ
    np.testing.assert_allclose(ens.probabilities(ens.logits_arrays(images), 1.0), mean, atol=1e-5)

    onnx = tmp_path / "ens.onnx"  # the export carries every member, checked against PyTorch on validation images
    assert main(["export", str(out), "--onnx", str(onnx), "--verify-images", "4", "--data", str(data_root),
                 "--cache", str(cache_dir)]) == 0
    from rcdnet.predict.onnx import OnnxPredictor
    np.testing.assert_allclose(OnnxPredictor(onnx).predict_arrays(images), ens.predict_arrays(images), atol=1e-4)

    capsys.readouterr()
    assert main([*args, "--resume"]) == 0  # a finished ensemble is neither trained nor scored again
    assert "finished earlier" in capsys.readouterr().out
