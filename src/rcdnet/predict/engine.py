"""A checkpoint's forward pass on ONNX Runtime: exported once per checkpoint, checked against PyTorch at every load.

:class:`~rcdnet.predict.pytorch.TorchPredictor` computes its logits here when the process's engine
(:func:`rcdnet.runtime.engine`) is ``onnxruntime`` (the default): 2-3x faster than PyTorch on the CPU for the same
numbers. The graph is the decision function up to the logits (normalise, model, mirror average when ``tta``):
``image`` (N, 1, S, S) float32 grey levels 0..255 -> ``logits`` (N, C); a model with a localisation head has a
second output, ``lesion_map`` (N, 1, S, S) (ONNX Runtime computes only what the requested output needs). It is written to the preprocessing cache,
named by a hash of the network's weights, the mirroring and the rcdnet and torch versions (so a checkpoint whose
temperature or thresholds change keeps its graph; :mod:`rcdnet.models.exported`); each load runs a few fixed images
through both engines and refuses the graph (the caller falls back to PyTorch) if they differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from rcdnet.models.exported import export_graph, graph_file, probe_images, session
from rcdnet.models.input import DecisionFunction

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


def graph_path(decision: DecisionFunction, cache_dir: Path) -> Path:
    """Where the logits graph of ``decision`` is kept (named by its weights and buffers, its mirroring, its model's
    class and the rcdnet and torch versions)."""
    return graph_file(decision, f"{type(decision.model).__name__}|tta={decision.tta}", cache_dir)


def export_logits(decision: DecisionFunction, size: int, path: Path, opset: int = 18) -> Path:
    """Write ``decision``'s logits as an ONNX graph with a dynamic batch."""
    return export_graph(_Graph(decision), size, path, outputs(decision), opset)


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
