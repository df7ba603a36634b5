"""A seed ensemble (``train.members`` > 1): each member trained like a single model, then shipped as one checkpoint.

Member k is the run's recipe with seed ``seed + k`` (its own augmentation draws, classifier initialisation and best
epoch) on the run's one split, trained in ``RUN/members/seed{seed + k}/`` (a complete checkpoint directory: a crash
resumes the member it stopped in, finished members are kept). ``RUN/checkpoints/best.pt`` then holds all of them as
one :class:`~rcdnet.models.members.MemberMean`, calibrated and evaluated like any model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rcdnet.config import RunConfig
from rcdnet.data.prepare import PreparedData
from rcdnet.models.members import member_state
from rcdnet.training import distributed as dist
from rcdnet.models.checkpoint import load_checkpoint, save_atomic
from rcdnet.training.trainer import Trainer


def member_config(cfg: RunConfig, k: int) -> RunConfig:
    """Member ``k``'s settings: the run's, with seed ``seed + k``, as a single model."""
    return dataclasses.replace(cfg, seed=cfg.seed + k, train=dataclasses.replace(cfg.train, members=1))


def member_dir(run_dir: Path, cfg: RunConfig, k: int) -> Path:
    return Path(run_dir) / "members" / f"seed{cfg.seed + k}"


def has_training(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a training run (its own ``last.pt`` or a member's)."""
    run_dir = Path(run_dir)
    return (run_dir / "checkpoints" / "last.pt").exists() or any(run_dir.glob("members/*/checkpoints/last.pt"))


def train_members(cfg: RunConfig, data: PreparedData, run_dir: Path, *, resume: bool, progress: bool,
                  cache_dir: Path | None, ctx: dist.Context) -> tuple[list[dict], dict]:
    """Train every member (resuming or keeping finished ones when ``resume``) and write the run's ``best.pt``.
    Returns (the members' histories, each record with its ``member``, and the run's ``best``)."""
    history, bests = [], []
    for k in range(cfg.train.members):
        out = member_dir(run_dir, cfg, k)
        trainer = Trainer(member_config(cfg, k), data, out, progress=progress, cache_dir=cache_dir, ctx=ctx)
        if resume and trainer.resume() and ctx.main:
            print(f"member {k + 1}/{cfg.train.members} ({out}): resuming after epoch {trainer.start_epoch}")
        bests.append(trainer.fit())
        history += [{"member": k, **h} for h in trainer.history]
        dist.barrier(ctx)
    best = {"name": cfg.train.select_metric, "epoch": [b["epoch"] for b in bests],
            "metric": float(np.mean([b["metric"] for b in bests]))}  # the members' own validation scores, averaged
    if ctx.main:
        assemble(cfg, [member_dir(run_dir, cfg, k) / "checkpoints" / "best.pt" for k in range(cfg.train.members)],
                 Path(run_dir) / "checkpoints" / "best.pt", history, best)
    return history, best


def assemble(cfg: RunConfig, member_checkpoints: list[Path], out: Path, history: list[dict], best: dict) -> None:
    """One checkpoint holding every member's best weights as a :class:`MemberMean` (written atomically)."""
    ckpts = [load_checkpoint(p) for p in member_checkpoints]
    first = ckpts[0]
    for p, c in zip(member_checkpoints[1:], ckpts[1:]):
        if c["classes"] != first["classes"] or c.get("input") != first.get("input"):
            raise ValueError(f"{p}: a member with other classes or another input than {member_checkpoints[0]}")
    save_atomic({"format": first["format"], "version": first["version"], "config": cfg.to_dict(),
                 "classes": first["classes"], "epoch": max(c["epoch"] for c in ckpts),
                 "model": member_state([c["model"] for c in ckpts]), "val_keys": first["val_keys"],
                 "history": history, "best": best, "input": first["input"]}, out)
