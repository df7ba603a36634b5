"""A network's forward pass on ONNX Runtime: exported once per weights into the cache, checked against PyTorch.

Used by the checkpoint's classifier (:mod:`rcdnet.predict.engine`) and by the lesion finder
(:meth:`rcdnet.segment.finder.LesionFinder.load`) when the process's engine is ``onnxruntime`` (the default): the
same numbers, faster on the CPU. A graph is named by a hash of the module's class, a tag, its weights and buffers and
the rcdnet and torch versions, written atomically (processes sharing the cache only ever see a whole file), and each
load runs :func:`probe_images` through both engines before it is trusted.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rcdnet import __version__
from rcdnet.runtime import threads as compute_threads


def graph_file(module: nn.Module, tag: str, cache_dir: Path) -> Path:
    """Where ``module``'s graph is kept in ``cache_dir``: named by its class, ``tag``, weights and versions."""
    h = hashlib.sha256("|".join([type(module).__name__, tag, __version__, torch.__version__]).encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return Path(cache_dir) / "onnx" / f"{h.hexdigest()[:20]}.onnx"


def export_graph(module: nn.Module, size: int, path: Path, outputs: list[str], opset: int = 18) -> Path:
    """``module``: (N, 1, size, size) float32 ``image`` -> ``outputs``, exported with a dynamic batch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp.onnx")
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(module.eval(), (torch.full((2, 1, size, size), 128.0),), str(tmp), input_names=["image"],
                      output_names=outputs, dynamic_shapes={"image": {0: batch}}, opset_version=opset,
                      external_data=False, dynamo=True, verbose=False)
    os.replace(tmp, path)
    return path


def probe_images(size: int) -> torch.Tensor:
    """(3, 1, size, size) fixed grey-level images (a ramp, noise, a disc) that both engines must agree on."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    ramp = 255.0 * (xx + yy) / (2 * size - 2)
    disc = np.where((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 5) ** 2, 40.0, 170.0)
    noise = rng.integers(0, 256, (size, size)).astype(np.float64)
    return torch.from_numpy(np.stack([ramp, noise, disc])[:, None].astype(np.float32))


def session(path: str | Path, threads: int = 0):
    """An ONNX Runtime CPU session with full graph optimisation; ``threads`` 0 = the process's policy
    (:mod:`rcdnet.runtime`)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or compute_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
