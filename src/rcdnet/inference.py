"""Load a trained checkpoint and turn images into malignancy probabilities, with the same preprocessing
as training. Used by ``evaluate``, ``predict`` and anything that serves the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rcdnet.config import with_defaults
from rcdnet.data.prepare import preprocessor_from_config
from rcdnet.data.samples import DataProblem, ImageReadError, read_image
from rcdnet.models.registry import create_model

CHECKPOINT_FORMAT = "rcdnet-checkpoint/1"


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its ``checkpoints/best.pt``) or a checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "best.pt"
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint found (expected a .pt file or a run directory with "
                                "checkpoints/best.pt)")
    return p


def load_checkpoint(path: str | Path) -> dict:
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"{p}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{p}: not an rcdnet checkpoint")
    ckpt["path"] = str(p)
    return ckpt


def build_model(cfg: dict, num_classes: int, pretrained: bool) -> torch.nn.Module:
    m = cfg["model"]
    return create_model(m["name"], num_classes=num_classes, pretrained=pretrained, weights=m.get("weights"),
                        **({"dsc_channels": m["dsc_channels"], "use_cbam": m["use_cbam"], "drop_rate": m["drop_rate"]}
                           if m["name"].startswith("rcdnet") else {"drop_rate": m["drop_rate"]}))


class Predictor:
    """A trained model with its preprocessing, class names and validation-chosen operating points.

    ``predict_arrays``: (N, S, S) uint8 preprocessed images -> (N, num_classes) probabilities, with the
    checkpoint's softmax temperature (fitted on validation) and, if ``tta``, averaged with the mirrored image."""

    def __init__(self, checkpoint: str | Path | dict, batch_size: int = 32, tta: bool | None = None):
        ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        self.checkpoint_path = ckpt.get("path", "")
        self.config = with_defaults(ckpt["config"])
        self.temperature = float(ckpt.get("temperature", 1.0))
        self.tta = self.config["eval"]["tta"] if tta is None else tta
        self.classes: list[str] = list(ckpt["classes"])
        self.thresholds: dict[str, float] = dict(ckpt.get("thresholds") or {"default": 0.5})
        self.val_keys: list[str] = list(ckpt.get("val_keys") or [])
        self.preprocessor = preprocessor_from_config(self.config)
        self.model = build_model(self.config, len(self.classes), pretrained=False)
        self.model.load_state_dict(ckpt["model"])
        self.model.eval()
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        self.mean = torch.tensor(cfg.get("mean", (0.5, 0.5, 0.5)), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.5, 0.5, 0.5)), dtype=torch.float32).view(1, 3, 1, 1)
        self.batch_size = batch_size
        self.malignant_index = self.classes.index("malignant")

    def to_tensor(self, images: np.ndarray) -> torch.Tensor:
        """(N, S, S) uint8 -> (N, 3, S, S) normalised float."""
        x = torch.from_numpy(np.ascontiguousarray(images)).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def batches(self, images: np.ndarray):
        for i in range(0, len(images), self.batch_size):
            yield self.to_tensor(images[i:i + self.batch_size])

    @torch.inference_mode()
    def logits_arrays(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 -> (N, C) raw logits (no temperature; mirrored-image average if ``tta``)."""
        out = []
        for x in self.batches(images):
            z = self.model(x)
            if self.tta:
                z = (z + self.model(torch.flip(x, dims=[3]))) / 2
            out.append(z.numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def probabilities(self, logits: np.ndarray, temperature: float | None = None) -> np.ndarray:
        """(N, C) logits -> (N, C) softmax probabilities at the checkpoint's temperature (or the one given)."""
        t = self.temperature if temperature is None else temperature
        return torch.softmax(torch.from_numpy(np.asarray(logits, np.float32)) / t, dim=1).numpy()

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        return self.probabilities(self.logits_arrays(images))

    def adapted(self, images: np.ndarray) -> "Predictor":
        """A copy whose batch-norm statistics are re-estimated on ``images`` (AdaBN; no labels used)."""
        import copy

        from rcdnet.models.adabn import adapt_batchnorm

        other = copy.copy(self)
        other.model = adapt_batchnorm(self.model, self.batches(images))
        return other

    def predict_files(self, paths: list[Path]) -> tuple[list[dict], list[DataProblem]]:
        """Read, preprocess and classify image files; unreadable ones are reported and skipped."""
        arrays, kept, problems = [], [], []
        for p in paths:
            try:
                arrays.append(self.preprocessor(read_image(p)))
                kept.append(p)
            except ImageReadError as exc:
                problems.append(DataProblem(str(p), str(exc).replace(f"{p}: ", "")))
        probs = self.predict_arrays(np.stack(arrays)) if arrays else np.zeros((0, len(self.classes)))
        rows = [self.describe(str(p), pr) for p, pr in zip(kept, probs)]
        return rows, problems

    def describe(self, name: str, probs: np.ndarray) -> dict:
        p_mal = float(probs[self.malignant_index])
        row = {"image": name, "label": self.classes[int(np.argmax(probs))], "p_malignant": round(p_mal, 4)}
        for op, t in self.thresholds.items():
            row[f"malignant@{op}"] = p_mal >= t
        return row
