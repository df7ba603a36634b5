"""Atomic checkpoint writes: a crash (even kill -9) mid-write never leaves a broken file behind."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
