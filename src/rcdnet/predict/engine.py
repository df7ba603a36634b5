"""A checkpoint's forward pass on ONNX Runtime: exported once per checkpoint, checked against PyTorch at every load.

:class:`~rcdnet.predict.pytorch.TorchPredictor` computes its logits here when the process's engine
(:func:`rcdnet.runtime.engine`) is ``onnxruntime`` (the default): 2-3x faster than PyTorch on the CPU for the same
numbers. The graph is the decision function up to the logits (normalise, model, mirror average when ``tta``):
``image`` (N, 1, S, S) float32 grey levels 0..255 -> ``logits`` (N, C); a model with a localisation head has a
second output, ``lesion_map`` (N, 1, S, S) (ONNX Runtime computes only what the requested output needs). It is written to the preprocessing cache,
named by a hash of the network's weights, the mirroring and the rcdnet and torch versions (so a checkpoint whose
temperature or thresholds change keeps its graph); each load runs a few fixed images through both engines and
refuses the graph (the caller falls back to PyTorch) if they differ.
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
from rcdnet.models.input import DecisionFunction
from rcdnet.predict.onnx import session

TOLERANCE = 1e-3  # largest |logit difference| accepted between the engines (seen: about 1e-6)


class EngineMismatch(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes."""


def outputs(decision: DecisionFunction) -> list[str]:
    return ["logits", "lesion_map"] if getattr(decision.model, "localiser", None) is not None else ["logits"]


class _Graph(nn.Module):
    def __init__(self, decision: DecisionFunction):
        super().__init__()
        self.decision, self.with_map = decision, len(outputs(decision)) == 2

    def forward(self, image: torch.Tensor):
        logits = self.decision.logits(image)
        return (logits, self.decision.lesion_map(image)) if self.with_map else logits


def probe_images(size: int) -> torch.Tensor:
    """(3, 1, size, size) fixed grey-level images (a ramp, noise, a disc) that both engines must agree on."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    ramp = 255.0 * (xx + yy) / (2 * size - 2)
    disc = np.where((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 5) ** 2, 40.0, 170.0)
    noise = rng.integers(0, 256, (size, size)).astype(np.float64)
    return torch.from_numpy(np.stack([ramp, noise, disc])[:, None].astype(np.float32))


def graph_path(decision: DecisionFunction, cache_dir: Path) -> Path:
    """Where the logits graph of ``decision`` is kept: named by its weights and buffers, its mirroring, its
    model's class and the rcdnet and torch versions."""
    h = hashlib.sha256("|".join([type(decision.model).__name__, f"tta={decision.tta}", __version__,
                                 torch.__version__]).encode())
    for name, t in sorted(decision.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return cache_dir / "onnx" / f"{h.hexdigest()[:20]}.onnx"


def export_logits(decision: DecisionFunction, size: int, path: Path, opset: int = 18) -> Path:
    """Write ``decision``'s logits as an ONNX graph with a dynamic batch (atomically: other processes sharing the
    cache only ever see a whole file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp.onnx")
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(_Graph(decision).eval(), (torch.full((2, 1, size, size), 128.0),), str(tmp),
                      input_names=["image"], output_names=outputs(decision), dynamic_shapes={"image": {0: batch}},
                      opset_version=opset, external_data=False, dynamo=True, verbose=False)
    os.replace(tmp, path)
    return path


class OnnxLogits:
    """``(N, 1, S, S)`` float32 grey levels -> ``(N, C)`` logits of ``decision`` on ONNX Runtime (or, with
    ``output="lesion_map"``, its localisation head's (N, 1, S, S) map).

    Exports the graph on first use of a checkpoint (about 10-20 s on 2 cores), then reuses it; raises
    :class:`EngineMismatch` when the graph's outputs differ from PyTorch's on :func:`probe_images`."""

    def __init__(self, decision: DecisionFunction, size: int, cache_dir: Path):
        self.path = graph_path(decision, cache_dir)
        if not self.path.is_file():
            export_logits(decision, size, self.path)
        self.session = session(self.path)
        self.outputs = [o.name for o in self.session.get_outputs()]
        probe = probe_images(size)
        with torch.inference_mode():
            expected = {"logits": decision.logits(probe).numpy()}
            if "lesion_map" in outputs(decision):
                expected["lesion_map"] = decision.lesion_map(probe).numpy()
        if sorted(self.outputs) != sorted(expected):
            raise EngineMismatch(f"{self.path}: the ONNX graph's outputs are {self.outputs}, not {sorted(expected)}")
        for name, want in expected.items():
            got = self(probe.numpy(), name)
            if got.shape != want.shape or not np.allclose(got, want, atol=TOLERANCE, rtol=0):
                diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
                raise EngineMismatch(f"{self.path}: the ONNX graph's {name} differ from PyTorch's by {diff:.2g} "
                                     f"(tolerance {TOLERANCE}); delete the file to export it again")

    def __call__(self, grey: np.ndarray, output: str = "logits") -> np.ndarray:
        return self.session.run([output], {"image": np.ascontiguousarray(grey, np.float32)})[0]
