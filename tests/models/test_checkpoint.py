"""Checkpoints are read without running code: a crafted file is refused, its payload never runs."""

import pickle
import zipfile

import pytest
import torch

from rcdnet.cli import main
from rcdnet.predict.pytorch import TorchPredictor
from rcdnet.models.checkpoint import CHECKPOINT_FORMAT, load_checkpoint


class _Payload:
    """Unpickling this object calls ``open(path, "w")``: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_crafted_checkpoint_is_refused_and_its_payload_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": _Payload(marker)}, bad)
    assert zipfile.is_zipfile(bad)  # a real torch.save file, not random bytes
    with pytest.raises(ValueError, match=r"bad.pt: refused"):
        load_checkpoint(bad)
    with pytest.raises(ValueError, match="bad.pt"):
        TorchPredictor(bad)
    assert main(["predict", str(bad), str(tmp_path)]) == 2
    assert "refused" in capsys.readouterr().err
    legacy = tmp_path / "legacy.pt"  # the old pickle format, same payload
    with open(legacy, "wb") as fh:
        pickle.dump({"format": CHECKPOINT_FORMAT, "model": _Payload(marker)}, fh)
    with pytest.raises(ValueError, match="legacy.pt"):
        load_checkpoint(legacy)
    assert not marker.exists()


def test_other_files_are_named_as_not_a_checkpoint(tmp_path, capsys):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x09\x12\x07pytorch")  # how an ONNX protobuf starts
    with pytest.raises(ValueError, match=r"model.onnx: not a PyTorch checkpoint"):
        load_checkpoint(onnx)
    assert main(["explain", str(onnx), str(tmp_path)]) == 2
    assert "model.onnx: heat maps need a PyTorch checkpoint" in capsys.readouterr().err
    renamed = tmp_path / "model.pt"
    renamed.write_bytes(onnx.read_bytes())
    assert main(["explain", str(renamed), str(tmp_path)]) == 2  # an ONNX file with a checkpoint's name
    assert "model.pt: not a PyTorch checkpoint" in capsys.readouterr().err


def test_own_checkpoints_load_with_weights_only(untrained_checkpoint):
    ckpt = load_checkpoint(untrained_checkpoint)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["classes"] == ["benign", "malignant"]
    with pytest.raises(ValueError, match="not an rcdnet checkpoint"):
        other = untrained_checkpoint.with_name("other.pt")
        torch.save({"weights": torch.zeros(2)}, other)
        load_checkpoint(other)
