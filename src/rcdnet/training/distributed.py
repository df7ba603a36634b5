"""Distributed data-parallel training on PyTorch's own engine, started by ``torchrun``.

``torchrun --nproc-per-node N -m rcdnet train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; :func:`setup` then joins
the process group (NCCL on GPUs, gloo on CPUs). Without those variables everything runs as one process.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, logs and reports."""
        return self.rank == 0


def setup(device: str = "auto") -> Context:
    """Join the process group if started by torchrun; pick the device (``auto``: this rank's GPU, else CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Context(rank, world, local, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def all_sum(ctx: Context, values: list[float]) -> list[float]:
    """Sum a few numbers over all ranks (e.g. loss sums and counts)."""
    if not ctx.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_objects(ctx: Context, obj):
    """Every rank's ``obj``, in rank order."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def resolve_precision(ctx: Context, precision: str) -> str:
    """``auto`` = bf16 on GPUs that support it, fp32 on the CPU; fp16/bf16 are for GPUs only."""
    if precision == "auto":
        return "bf16" if ctx.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"train.precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if precision != "fp32" and ctx.device.type != "cuda":
        raise ValueError(f"train.precision {precision} needs a GPU; use fp32 (or auto) on the CPU")
    return precision


def autocast(ctx: Context, precision: str):
    """A fresh mixed-precision context for one forward pass (``precision`` from :func:`resolve_precision`)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(ctx.device.type, dtype=dtype, enabled=dtype is not None)
