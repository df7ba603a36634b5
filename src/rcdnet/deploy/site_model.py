"""A new model file that carries a site's calibration beside the original one (``rcdnet site-validate``).

The same kind of file as the model it came from: a checkpoint (``site_calibration`` next to the validation-chosen
``thresholds``), an ONNX model (in its metadata) or an ensemble JSON (written beside the original, so that its member
paths still hold). ``predict``, ``evaluate`` and ``serve`` read it through :func:`rcdnet.predict.load_predictor`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from rcdnet import __version__
from rcdnet.files import file_sha256
from rcdnet.predict import model_file, model_kind
from rcdnet.predict.site_calibration import SiteCalibration


def cases_digest(samples: list) -> str:
    """A hash of the local cases as they were read: every file's content hash and label, in key order."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.key):
        h.update(f"{s.key}|{s.label}|{file_sha256(s.path)}\n".encode())
    return h.hexdigest()


def provenance(model: Path, cases: str, samples: list, summary: dict, original: dict) -> dict:
    return {"cases_file": cases, "cases_sha256": cases_digest(samples), "model_file": model.name,
            "model_sha256": file_sha256(model), "n_cases": summary["n_cases"], "n_malignant": summary["n_malignant"],
            "folds": summary["folds"], "target_sensitivity": summary["target_sensitivity"],
            "original_thresholds": original, "rcdnet": __version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def write_site_model(model: str | Path, site: SiteCalibration, out_dir: Path) -> Path:
    """Write the model with ``site`` beside its own calibration; returns the new file."""
    from rcdnet.deploy.onnx import write_metadata
    from rcdnet.predict.onnx import read_metadata
    from rcdnet.models.checkpoint import load_checkpoint, save_atomic

    src = model_file(model)
    if model_kind(src) == "ensemble":
        spec = json.loads(src.read_text())
        target = src.with_name(f"{src.stem}.site.json")
        target.write_text(json.dumps({**spec, "site_calibration": site.to_dict()}, indent=1))
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    if model_kind(src) == "onnx":
        target = out_dir / f"{src.stem}.site.onnx"
        shutil.copyfile(src, target)
        write_metadata(target, {**read_metadata(src), "site_calibration": site.to_dict()})
        return target
    ckpt = load_checkpoint(src)
    target = out_dir / f"{src.stem}.site.pt"
    save_atomic({**ckpt, "site_calibration": site.to_dict()}, target)
    return target


def write_adapted_model(model: str | Path, adapted, out_dir: Path, record: dict) -> Path:
    """The checkpoint ``model`` with the batch-norm statistics and operating points of ``adapted`` (a
    :class:`~rcdnet.predict.pytorch.TorchPredictor` after AdaBN) and ``record`` (what it was adapted on) as
    ``site_adaptation``, written to ``out_dir/<name>.adabn.pt``; its lesion finder is copied beside it."""
    from rcdnet.models.checkpoint import load_checkpoint, save_atomic
    from rcdnet.segment.model import FILE, segmenter_beside

    src = model_file(model)
    ckpt = load_checkpoint(src)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{src.stem}.adabn.pt"
    state = {k: v.contiguous() for k, v in adapted.model.state_dict().items()}
    save_atomic({**ckpt, "model": state, "thresholds": dict(adapted.thresholds),
                 "site_adaptation": {**record, "model_file": src.name, "model_sha256": file_sha256(src),
                                     "original_thresholds": ckpt.get("thresholds"), "rcdnet": __version__,
                                     "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}}, target)
    if finder := segmenter_beside(src):
        shutil.copyfile(finder, out_dir / FILE)
    return target
