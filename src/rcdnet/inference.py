"""Load a trained checkpoint and turn images into malignancy probabilities, with the same preprocessing
as training. Used by ``evaluate``, ``predict`` and anything that serves the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from rcdnet.config import with_defaults
from rcdnet.data.prepare import preprocessor_from_config
from rcdnet.data.samples import DataProblem, ImageReadError
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
                        image_size=cfg["data"]["image_size"],
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
            if self.tta:  # the image and its mirror in one batch
                z = self.model(torch.cat([x, torch.flip(x, dims=[3])]))
                z = (z[: len(x)] + z[len(x):]) / 2
            else:
                z = self.model(x)
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

    def describe(self, name: str, probs: np.ndarray) -> dict:
        return describe_prediction(self, name, probs)


def named_dataset(predictor, name: str, data_root: str | Path | None) -> tuple[list, list[DataProblem]]:
    """(samples, problems) of a named dataset for ``predictor``: ``busi-val`` is the run's own validation split
    (the checkpoint's validation keys), any other name a dataset read by ``load_dataset``."""
    from rcdnet.data.readers import load_dataset

    classes = tuple(predictor.classes)
    if name != "busi-val":
        return load_dataset(name, data_root, classes=classes)
    if not predictor.val_keys:
        raise ValueError(f"{predictor.checkpoint_path}: the checkpoint holds no validation split")
    samples, problems = load_dataset(predictor.config["data"]["dataset"], data_root, classes=classes)
    val = set(predictor.val_keys)
    return [s for s in samples if s.key in val], problems


def describe_prediction(predictor, name: str, probs: np.ndarray, frames: int = 1) -> dict:
    """One output row: label (arg-max class), malignancy probability, and the decision at every operating point
    chosen on validation."""
    p_mal = float(probs[predictor.malignant_index])
    row = {"image": name, "label": predictor.classes[int(np.argmax(probs))], "p_malignant": round(p_mal, 4)}
    for op, t in predictor.thresholds.items():
        row[f"malignant@{op}"] = p_mal >= t
    row["frames"] = frames
    return row


def smooth(p: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` frames (shorter at the clip's ends)."""
    if window <= 1 or len(p) < 2:
        return p.copy()
    k = np.ones(window)
    return np.convolve(p, k, "same") / np.convolve(np.ones_like(p), k, "same")


def predict_sources(predictor, paths: list[Path], window: int = 5, chunk: int = 32
                    ) -> tuple[list[dict], dict[str, list[dict]], list[DataProblem]]:
    """Classify image, DICOM and video files (any predictor: PyTorch or ONNX Runtime).

    Returns one row per file (for a multi-frame DICOM or a video: the clip's result from the mean per-frame
    probability), per-frame rows for every multi-frame file (with the probability smoothed over ``window``
    frames), and the files that could not be read, which are skipped. A clip that ended early (a truncated video)
    is predicted from the frames that were decoded and is also listed among the problems, with what happened."""
    from rcdnet.data.sources import IncompleteVideo, read_frames

    rows, frame_rows, problems = [], {}, []
    for path in paths:
        probs, meta, batch = [], [], []
        try:
            for fr in read_frames(path):
                batch.append(predictor.preprocessor(fr.rgb))
                meta.append(fr)
                if len(batch) == chunk:
                    probs.append(predictor.predict_arrays(np.stack(batch)))
                    batch = []
        except ImageReadError as exc:
            problems.append(DataProblem(str(path), str(exc).removeprefix(f"{path}: ")))
            if not isinstance(exc, IncompleteVideo):  # a clip that ended early keeps the frames it gave
                continue
        if batch:
            probs.append(predictor.predict_arrays(np.stack(batch)))
        pr = np.concatenate(probs)
        if len(pr) == 1 and meta[0].time is None:
            rows.append(describe_prediction(predictor, str(path), pr[0]))
            continue
        p_mal = pr[:, predictor.malignant_index]
        sm = smooth(p_mal, window)
        frame_rows[str(path)] = [{"frame": fr.index, "time_s": "" if fr.time is None else round(fr.time, 3),
                                  "p_malignant": round(float(p), 4), "p_malignant_smoothed": round(float(q), 4)}
                                 for fr, p, q in zip(meta, p_mal, sm)]
        rows.append(describe_prediction(predictor, str(path), pr.mean(axis=0), frames=len(pr)))
    return rows, frame_rows, problems


ENSEMBLE_FILE = "ensemble.json"


class EnsemblePredictor:
    """Several trained models (e.g. the folds of ``rcdnet cv``) used as one: the mean of their calibrated
    probabilities, with operating points chosen on the pooled out-of-fold predictions. Same interface as
    :class:`Predictor` for ``predict``, ``evaluate`` and the service."""

    def __init__(self, path: str | Path, batch_size: int = 32):
        path = Path(path)
        spec_file = path / ENSEMBLE_FILE if path.is_dir() else path
        try:
            spec = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{spec_file}: not a readable ensemble description ({exc})") from None
        if spec.get("format") != "rcdnet-ensemble/1" or not spec.get("members"):
            raise ValueError(f"{spec_file}: not an rcdnet ensemble (format rcdnet-ensemble/1 with members)")
        self.members = [Predictor(spec_file.parent / m, batch_size=batch_size) for m in spec["members"]]
        first = self.members[0]
        for m in self.members[1:]:
            if m.classes != first.classes or m.preprocessor != first.preprocessor:
                raise ValueError(f"{spec_file}: members differ in classes or preprocessing")
        self.checkpoint_path = str(spec_file)
        self.config, self.classes, self.preprocessor = first.config, first.classes, first.preprocessor
        self.malignant_index, self.tta, self.temperature = first.malignant_index, first.tta, 1.0
        self.thresholds: dict[str, float] = dict(spec.get("thresholds") or {"default": 0.5})
        self.val_keys: list[str] = []

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S) uint8 -> (N, C): the mean of the members' calibrated probabilities."""
        return np.mean([m.predict_arrays(images) for m in self.members], axis=0)

    def logits_arrays(self, images: np.ndarray) -> np.ndarray:
        """Log of the mean probabilities (members are already calibrated, so the temperature here is 1)."""
        return np.log(np.clip(self.predict_arrays(images), 1e-12, 1))

    def probabilities(self, logits: np.ndarray, temperature: float | None = None) -> np.ndarray:
        return torch.softmax(torch.from_numpy(np.asarray(logits, np.float32)), dim=1).numpy()

    def describe(self, name: str, probs: np.ndarray) -> dict:
        return describe_prediction(self, name, probs)


def load_predictor(path: str | Path, **kwargs):
    """Any trained model: a run directory or ``.pt`` checkpoint (PyTorch), an exported ``.onnx`` (ONNX Runtime),
    or a cross-validation directory / ``ensemble.json`` (fold ensemble)."""
    p = Path(path)
    if p.suffix == ".onnx":
        from rcdnet.deploy.onnx import OnnxPredictor

        return OnnxPredictor(p, **{k: v for k, v in kwargs.items() if k in ("batch_size", "threads")})
    if p.suffix == ".json" or (p.is_dir() and (p / ENSEMBLE_FILE).is_file()):
        return EnsemblePredictor(p, **{k: v for k, v in kwargs.items() if k == "batch_size"})
    return Predictor(p, **{k: v for k, v in kwargs.items() if k in ("batch_size", "tta")})
