"""Shared fixtures. Tests that need the real data skip with a clear reason when it is absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import rcdnet.config as _config
from rcdnet.data.readers import DATA_ENV
from rcdnet.runtime import ENGINE_ENV

# Tests run checkpoints on PyTorch unless they ask for ONNX Runtime (tests/predict/test_engine.py, the end-to-end
# test): every model a test trains would otherwise pay a 10-20 s export for a handful of images.
os.environ.setdefault(ENGINE_ENV, "pytorch")


def _single_model_defaults(shipped=_config.default_dict) -> dict:
    """The packaged defaults with ``train.members: 1``: tests train single models unless they ask for a seed
    ensemble (tests/training/test_members.py, tests/models/test_members.py); the shipped default's members multiply
    every training's time and check nothing more. Subprocesses a test starts say ``--set train.members=1``."""
    d = shipped()
    d["train"]["members"] = 1
    return d


_config.default_dict = _single_model_defaults
SINGLE = "train.members=1"  # for the command lines of subprocesses

DATA = Path(os.environ.get(DATA_ENV) or Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
BUSI = DATA / "BUSI" / "Dataset_BUSI_with_GT"
# training tests check mechanics at the paper's 224 px: the default 320 px would double their time, check nothing more
TEST_SIZE = "data.image_size=224"
UDIAT = DATA / "UDIAT_DatasetB" / "BUS"

needs_data = pytest.mark.skipif(not BUSI.is_dir() or not UDIAT.is_dir(),
                                reason=f"real data not found at {DATA} (set {DATA_ENV}=PATH to the shared data folder)")


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not BUSI.is_dir() or not UDIAT.is_dir():
        pytest.skip(f"real data not found at {DATA} (set {DATA_ENV}=PATH to the shared data folder)")
    return DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the whole session, so tests share preprocessed images and duplicate screening."""
    return tmp_path_factory.mktemp("rcdnet-cache")


@pytest.fixture
def small_dataset(tmp_path, data_root) -> Path:
    """A folder-per-class copy of 6 real BUSI images per class, with their masks."""
    root = tmp_path / "folder"
    for cls in ("benign", "malignant"):
        (root / cls).mkdir(parents=True)
        for i in range(1, 7):
            src = BUSI / cls / f"{cls} ({i}).png"
            shutil.copy(src, root / cls / src.name)
            shutil.copy(BUSI / cls / f"{cls} ({i})_mask.png", root / cls / f"{cls} ({i})_mask.png")
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """A real whole-image RcdNet checkpoint without training (ImageNet Lite0 backbone, seeded random head, mirror
    TTA): enough to test everything that only needs a model, in seconds. Its 'validation split' is 4 BUSI images per
    class. (The region-of-interest default has its own untrained checkpoints: tests/data/test_boxes.py.)"""
    import torch

    from rcdnet.config import load_config
    from rcdnet.models.registry import build_model
    from rcdnet.models.checkpoint import CHECKPOINT_FORMAT

    torch.manual_seed(0)
    cfg = load_config(None, {"data": {"roi_margin": 0, "image_size": 320, "sources": ["busi"], "external": ["udiat"]},
                             "eval": {"tta": True}})
    model = build_model(cfg, 2, pretrained=True)
    path = tmp_path_factory.mktemp("ckpt") / "untrained.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "classes": ["benign", "malignant"],
                "model": model.state_dict(), "thresholds": {"default": 0.5},
                "val_keys": [f"busi/{c} ({i})" for c in ("benign", "malignant") for i in range(1, 5)]}, path)
    return path


@pytest.fixture(scope="session")
def exported_onnx(untrained_checkpoint, tmp_path_factory) -> Path:
    """The untrained checkpoint exported to ONNX once for the session (tests must not modify the file)."""
    from rcdnet.deploy.onnx import export_onnx
    from rcdnet.predict.pytorch import TorchPredictor

    return export_onnx(TorchPredictor(untrained_checkpoint), tmp_path_factory.mktemp("onnx") / "model.onnx")


def png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of ``width`` x ``height`` black pixels: a few hundred KB that decode to
    width * height bytes (an image bomb), compressed row by row so the test never holds the pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z, row, parts = zlib.compressobj(9), b"\0" * (width + 1), []
    for _ in range(height):
        parts.append(z.compress(row))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    """12000 x 12000 pixels (144 MP, over the 40 MP default limit) in about 140 KB."""
    return png_bomb(12000, 12000)


@pytest.fixture
def offline_hub(monkeypatch):
    """The model hub unreachable at once, as on a machine without internet: the environment variable for new
    imports and the constant huggingface_hub read when it was first imported (else each download waits on
    network timeouts)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


_SKIPPED: list[str] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_runtest_logreport(report):
    if report.skipped and _in_ci():
        _SKIPPED.append(f"{report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else ''}")


def pytest_sessionfinish(session, exitstatus):
    """In CI (CI=true) the data and the browser are present: a skipped test is a failure, never a quiet green."""
    if _SKIPPED and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED:
        terminalreporter.write_line(f"CI=true: {len(_SKIPPED)} skipped test(s) count as failures:", red=True)
        for line in _SKIPPED:
            terminalreporter.write_line(f"  {line}", red=True)
