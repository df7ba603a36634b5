"""One threading and memory policy for the whole process, applied once by every entry point (CLI, training
workers, the service) and recorded in every report.

- torch: ``threads`` intra-op threads (0 = one per core) and one inter-op thread, so no parallel region nests
  inside another;
- OpenCV: one thread. Its own pool would run beside torch's and fight it for the cores; rcdnet parallelises
  decoding and preprocessing over images instead (:func:`parallel_map`), which is where the work divides well
  (non-local-means denoising gains nothing from OpenCV's threads at 224-320 px);
- ONNX Runtime: ``threads`` intra-op threads, one inter-op thread (:func:`rcdnet.predict.onnx.session`);
- the engine of a checkpoint's forward pass (:func:`engine`): ONNX Runtime on a graph exported from it and checked
  against PyTorch (:mod:`rcdnet.predict.engine`), or PyTorch itself (``RCDNET_ENGINE=pytorch``);
- glibc ``malloc``: buffers up to 32 MB come from the heap and freed memory stays there (up to 1 GB) instead of
  being handed back to the kernel after every forward pass. Without this, each batch's activations were fresh
  pages the kernel had to zero: more system time than user time, and 3x slower inference on 2 cores.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import random
import resource
import subprocess
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch

T = TypeVar("T")
R = TypeVar("R")

THREADS_ENV = "RCDNET_THREADS"
ENGINE_ENV = "RCDNET_ENGINE"
ENGINES = ("onnxruntime", "pytorch")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # the most glibc accepts on 64-bit systems
TRIM_THRESHOLD = 1 << 30
_state: dict = {"threads": None, "malloc": "not set"}


def cores() -> int:
    """The CPU cores this process may use (its affinity mask, e.g. under taskset or a container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _tune_malloc() -> str:
    """Set the glibc heap thresholds; a description of what was done (other C libraries are left alone)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError, TypeError):
        return "default (not glibc)"
    return f"glibc mmap threshold {MMAP_THRESHOLD >> 20} MB, trim threshold {TRIM_THRESHOLD >> 20} MB" if ok else "default"


def apply(threads: int = 0) -> dict:
    """Apply the policy with ``threads`` compute threads (0: ``$RCDNET_THREADS``, else one per core); returns
    :func:`settings`. Safe to call again: only the thread counts change."""
    threads = threads or int(os.environ.get(THREADS_ENV) or 0) or cores()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # fixed once torch has run parallel work; it was set by the first call
        pass
    cv2.setNumThreads(1)
    if _state["malloc"] == "not set":
        _state["malloc"] = _tune_malloc()
    _state["threads"] = threads
    return settings()


def threads() -> int:
    """The compute threads of the policy (applying the default policy if nothing has yet)."""
    if _state["threads"] is None:
        apply()
    return _state["threads"]


def engine() -> str:
    """The engine checkpoints' forward passes run on: ``$RCDNET_ENGINE``, else ``onnxruntime``."""
    name = os.environ.get(ENGINE_ENV) or ENGINES[0]
    if name not in ENGINES:
        raise ValueError(f"{ENGINE_ENV}={name!r}: expected one of {', '.join(ENGINES)}")
    return name


def settings() -> dict:
    """What is in force, read back from each library: for reports and the test of the policy."""
    return {"threads": _state["threads"], "torch_intra_op": torch.get_num_threads(),
            "torch_inter_op": torch.get_num_interop_threads(), "opencv": cv2.getNumThreads(),
            "onnxruntime_intra_op": _state["threads"], "malloc": _state["malloc"], "cores": cores(),
            "engine": engine()}


def describe() -> str:
    s = settings()
    return (f"{s['threads']} threads on {s['cores']} cores (torch {s['torch_intra_op']}+{s['torch_inter_op']}, "
            f"OpenCV {s['opencv']}, image workers {s['threads']}), malloc: {s['malloc']}, engine: {s['engine']}")


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """``map(fn, items)`` on a pool of ``workers`` threads (default: the policy's), results in order, at most a
    few items ahead of the consumer. For decoding and OpenCV preprocessing, which release the GIL."""
    workers = workers or threads()
    if workers <= 1:
        yield from map(fn, items)
        return
    it = iter(items)
    with ThreadPoolExecutor(workers, thread_name_prefix="rcdnet-images") as pool:
        pending = []
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def with_progress(items: Iterable[T], total: int | None, desc: str, show: bool = True, unit: str = "img"
                  ) -> Iterable[T]:
    """``items`` with a progress bar on stderr (rate and time left) when ``show``; every long command uses it."""
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def environment() -> dict:
    """Where a number came from: the commit (with "+local changes" when the tree differs), the UTC date, the
    hardware, the threading policy, Python and torch."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
        commit += "+local changes" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hardware = f"{cpu}, {cores()} cores" + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
                                                      else ", no GPU")
    return {"commit": commit, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "hardware": hardware, "threads": describe(),
            "python": platform.python_version(),
            "torch": torch.__version__}


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's random generators from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_memory_mb() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
