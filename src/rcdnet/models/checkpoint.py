"""Checkpoints: written atomically (a crash, even ``kill -9``, mid-write never leaves a broken file behind) and read
without unpickling code (``torch.load(weights_only=True)``: tensors and plain Python values only).

A checkpoint (format ``rcdnet-checkpoint/1``) is a dict of plain values:

    format, version, config (the run's settings), classes, epoch, model (state dict), val_keys, history, best
    input          {"mean": [3], "std": [3], "preprocessing": {...}}: what turns a file into the model's input
    temperature    softmax temperature fitted on validation (after training)
    thresholds     operating points chosen on validation (after training)
    train_model, optimizer, scheduler, swa, swa_scheduler   last.pt only: what ``--resume`` needs

Checkpoints written before ``input`` existed load too: the input is then derived from the config and the model.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

CHECKPOINT_FORMAT = "rcdnet-checkpoint/1"


def save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its ``checkpoints/best.pt``) or a checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "best.pt"
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint found (expected a .pt file or a run directory with "
                                "checkpoints/best.pt)")
    return p


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read an rcdnet checkpoint. Nothing in the file is executed: a file that needs more than tensors and plain
    values to load (a crafted pickle, another program's object) is rejected with a ValueError naming it."""
    p = resolve_checkpoint(path)
    with open(p, "rb") as fh:
        head = fh.read(2)
    if not (head == b"PK" or head[:1] == b"\x80"):  # torch.save's zip archive, or a legacy pickle stream
        raise ValueError(f"{p}: not a PyTorch checkpoint (heat maps, robustness and --resume need the .pt file "
                         "or run directory written by `rcdnet train`)")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{p}: refused: the file holds more than tensors and plain values ({first}); "
                         "rcdnet never runs code from a model file") from None
    except Exception as exc:
        raise ValueError(f"{p}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{p}: not an rcdnet checkpoint")
    return ckpt
