"""Model size and CPU speed: parameters, GFLOPs (torch's FLOP counter) and inference latency / throughput."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def time_calls(fn, repeats: int, warmup: int = 2) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def gflops(model: nn.Module, image_size: int) -> float:
    """Forward GFLOPs for one (1, 3, S, S) image, counted by ``torch.utils.flop_counter`` (a multiply-add counts 2,
    so this is about twice the "GMACs" many papers call FLOPs)."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops() / 1e9


@torch.inference_mode()
def cpu_speed(model: nn.Module, image_size: int, batch: int = 32, repeats: int = 30, rounds: int = 2
              ) -> dict[str, float]:
    """Eager fp32 forward passes on the CPU (all torch threads): median latency of one image (ms) and throughput
    of batches of ``batch`` (images / s), each after a warm-up; the best of ``rounds`` rounds, so that a model
    measured first (cold caches, thread pool start) is not penalised."""
    model = model.eval().cpu()
    one = torch.randn(1, 3, image_size, image_size)
    many = torch.randn(batch, 3, image_size, image_size)
    latency, throughput = float("inf"), 0.0
    for _ in range(rounds):
        times = time_calls(lambda: model(one), repeats, warmup=5)
        batches = time_calls(lambda: model(many), max(2, repeats // 6), warmup=1)
        latency = min(latency, float(np.median(times) * 1000))
        throughput = max(throughput, batch * len(batches) / sum(batches))
    return {"latency_ms": latency, "throughput_img_s": float(throughput), "threads": torch.get_num_threads()}
