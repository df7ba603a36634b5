"""A checkpoint's logits on ONNX Runtime: the same numbers as PyTorch, exported once, refused when they differ."""

import shutil
import warnings

import numpy as np
import pytest
import torch

from rcdnet import runtime
from rcdnet.data.decode import read_image
from rcdnet.models.input import to_grey
from rcdnet.predict import engine as engine_mod
from rcdnet.predict.engine import EngineMismatch, OnnxLogits, graph_path
from rcdnet.predict.pytorch import TorchPredictor
from tests.conftest import BUSI


@pytest.fixture(scope="module")
def default_checkpoint(tmp_path_factory):
    """An untrained checkpoint of the default configuration (region of interest, 224 px, no mirroring)."""
    from rcdnet.config import load_config
    from rcdnet.models.registry import build_model
    from rcdnet.models.checkpoint import CHECKPOINT_FORMAT

    torch.manual_seed(1)
    cfg = load_config()
    path = tmp_path_factory.mktemp("engine") / "default.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "classes": ["benign", "malignant"],
                "model": build_model(cfg, 2, pretrained=True).state_dict(), "thresholds": {"default": 0.5}}, path)
    return path


@pytest.fixture(scope="module")
def graph_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture
def images(default_checkpoint, data_root):
    pre = TorchPredictor(default_checkpoint, engine="pytorch").preprocessor
    return np.stack([pre(read_image(BUSI / c / f"{c} (3).png"), (100, 80, 300, 240)) for c in ("benign", "malignant")])


def test_onnxruntime_gives_pytorchs_numbers_and_reuses_its_graph(default_checkpoint, graph_cache, images,
                                                                 monkeypatch):
    monkeypatch.setenv("RCDNET_CACHE", str(graph_cache))
    monkeypatch.delenv(runtime.ENGINE_ENV, raising=False)
    fast = TorchPredictor(default_checkpoint)  # the process's default engine
    slow = TorchPredictor(default_checkpoint, engine="pytorch")
    p_fast, p_slow = fast.predict_arrays(images), slow.predict_arrays(images)
    assert fast.engine == "onnxruntime" and fast.runtime.startswith("onnxruntime") and slow.runtime == "pytorch"
    assert np.abs(p_fast - p_slow).max() < 1e-5
    assert np.abs(fast.logits_arrays(images) - slow.logits_arrays(images)).max() < 1e-4
    assert [p.name for p in (graph_cache / "onnx").iterdir()] == [graph_path(fast.decision, graph_cache).name]

    def no_export(*a, **k):
        raise AssertionError("exported again")

    monkeypatch.setattr(engine_mod, "export_logits", no_export)
    again = TorchPredictor(default_checkpoint)
    assert np.array_equal(again.predict_arrays(images), p_fast) and again.engine == "onnxruntime"
    # the temperature is applied after the graph: a recalibrated checkpoint keeps it
    again.decision.temperature = 2.0
    assert graph_path(again.decision, graph_cache) == graph_path(fast.decision, graph_cache)


def test_a_graph_that_disagrees_is_refused_and_pytorch_takes_over(default_checkpoint, graph_cache, images,
                                                                  monkeypatch):
    monkeypatch.setenv("RCDNET_CACHE", str(graph_cache))
    original = TorchPredictor(default_checkpoint, engine="onnxruntime")
    original.predict_arrays(images[:1])  # the graph exists (made here or by the test before)
    other = TorchPredictor(default_checkpoint, engine="onnxruntime")
    with torch.no_grad():
        next(other.model.parameters()).mul_(1.5)  # other weights: another graph name
    planted = graph_path(other.decision, graph_cache)
    assert planted != original._graph.path
    shutil.copy(original._graph.path, planted)  # the first model's graph under the second's name
    with pytest.raises(EngineMismatch, match="differ from PyTorch's"):
        OnnxLogits(other.decision, 224, graph_cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = other.predict_arrays(images)
    assert other.engine == "pytorch" and any("using PyTorch" in str(w.message) for w in caught)
    with torch.no_grad():  # what the second model computes on PyTorch, not what the planted graph computes
        expected = torch.softmax(other.decision.logits(to_grey(images)), dim=1).numpy()
    assert np.abs(p - expected).max() < 1e-6 and np.abs(p - original.predict_arrays(images)).max() > 1e-5
    # AdaBN re-estimates the batch-norm statistics: its copy never uses the exported graph
    assert original.adapted(np.repeat(images, 2, axis=0)).engine == "pytorch"


def test_the_engine_is_part_of_the_policy(monkeypatch):
    monkeypatch.setenv(runtime.ENGINE_ENV, "pytorch")
    assert runtime.settings()["engine"] == "pytorch" and "engine: pytorch" in runtime.describe()
    monkeypatch.setenv(runtime.ENGINE_ENV, "tensorrt")
    with pytest.raises(ValueError, match="RCDNET_ENGINE='tensorrt': expected one of onnxruntime, pytorch"):
        runtime.engine()


def test_the_localisation_heads_map_runs_on_the_same_graph(tmp_path, data_root, monkeypatch):
    from rcdnet.config import load_config
    from rcdnet.models.registry import build_model
    from rcdnet.models.checkpoint import CHECKPOINT_FORMAT

    monkeypatch.setenv("RCDNET_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(2)
    cfg = load_config(None, {"data": {"roi_margin": 0}, "train": {"localise_weight": 0.5}})
    ckpt = tmp_path / "loc.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "classes": ["benign", "malignant"],
                "model": build_model(cfg, 2, pretrained=True).state_dict(), "thresholds": {"default": 0.5}}, ckpt)
    fast, slow = TorchPredictor(ckpt, engine="onnxruntime"), TorchPredictor(ckpt, engine="pytorch")
    rgb = read_image(BUSI / "malignant" / "malignant (5).png")
    x = fast.preprocessor(rgb)[None]
    m_fast, m_slow = fast.localise(x), slow.localise(x)
    assert fast.engine == "onnxruntime" and fast._graph.outputs == ["logits", "lesion_map"]
    assert m_fast.shape == (1, 224, 224) and np.abs(m_fast - m_slow).max() < 1e-4 and m_slow.std() > 1e-3
    assert np.abs(fast.predict_arrays(x) - slow.predict_arrays(x)).max() < 1e-5


def test_an_unknown_engine_is_a_clear_command_line_error(monkeypatch, capsys):
    from rcdnet.cli import main

    monkeypatch.setenv(runtime.ENGINE_ENV, "tensorrt")
    try:
        assert main(["predict", "no-such-run", "no-such.png"]) == 2
    finally:
        monkeypatch.setenv(runtime.ENGINE_ENV, "pytorch")
        runtime.apply()
    assert "rcdnet predict: error: RCDNET_ENGINE='tensorrt': expected one of onnxruntime, pytorch" in capsys.readouterr().err
