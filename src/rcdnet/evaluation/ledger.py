"""The ledger of external scorings: one row per evaluation of a model on a labelled set outside its training
sources, so that every published external number can say how many times that set had been scored before it.

The ledger is ``external_scores.csv``: the first one found in the output folder or above it, else a new one in the
nearest folder above named ``runs`` (the project's: ``runs/external_scores.csv``), else beside the output folder;
``RCDNET_LEDGER`` names another file. Rows are appended under
a file lock and never rewritten."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

LEDGER_NAME = "external_scores.csv"
LEDGER_ENV = "RCDNET_LEDGER"
FIELDS = ["date", "commit", "run", "config_hash", "dataset", "n", "auc"]
# Scorings before the ledger began (2026-11-23), counted in docs/decisions.md: lower bounds, by set.
BEFORE_LEDGER = {"udiat": 84}


def ledger_path(out_dir: str | Path) -> Path:
    """The ledger an evaluation written into ``out_dir`` appends to."""
    if os.environ.get(LEDGER_ENV):
        return Path(os.environ[LEDGER_ENV])
    here = Path(out_dir).absolute()
    for folder in (here, *here.parents):
        if (folder / LEDGER_NAME).is_file():
            return folder / LEDGER_NAME
    runs = next((folder for folder in (here, *here.parents) if folder.name == "runs"), None)
    return (runs or here.parent) / LEDGER_NAME


def config_hash(predictor) -> str:
    """12 hex digits of the SHA-256 of the model's resolved configuration (an ensemble: its first member's)."""
    cfg = getattr(predictor, "config", None)
    if cfg is None and getattr(predictor, "members", None):
        cfg = predictor.members[0].config
    text = json.dumps(cfg.to_dict() if cfg is not None else str(getattr(predictor, "source", "")), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def scorings(path: Path, dataset: str) -> int:
    """How many rows of the ledger at ``path`` score ``dataset``."""
    if not path.is_file():
        return 0
    with path.open(newline="") as f:
        return sum(row.get("dataset") == dataset for row in csv.DictReader(f))


def record(out_dir: str | Path, dataset: str, n: int, auc: float | None, predictor, commit: str) -> dict:
    """Append one scoring; returns what a results page prints beside the number: the ledger's path, how many
    times ``dataset`` had been scored there before this row, and the count from before the ledger began."""
    path = ledger_path(out_dir)
    row = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "commit": commit,
           "run": str(getattr(predictor, "source", "")), "config_hash": config_hash(predictor), "dataset": dataset,
           "n": n, "auc": "" if auc is None else f"{auc:.4f}"}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+", newline="") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            before = sum(r.get("dataset") == dataset for r in csv.DictReader(f))
            f.seek(0, os.SEEK_END)
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            if f.tell() == 0:
                writer.writeheader()
            writer.writerow(row)
    except (OSError, csv.Error) as exc:  # the evaluation is kept; the page says the scoring went unrecorded
        return {"ledger": str(path), "scored_before": None, "scored_before_ledger": BEFORE_LEDGER.get(dataset),
                "error": f"{path}: the ledger could not be read or written ({type(exc).__name__}: {exc})"}
    return {"ledger": str(path), "scored_before": before, "scored_before_ledger": BEFORE_LEDGER.get(dataset)}


def sentence(dataset: str, entry: dict) -> str:
    """'udiat had been scored 3 times in the ledger (...) before this number, and at least 84 times before the
    ledger began (docs/decisions.md)'."""
    if entry.get("error"):
        return f"{dataset}: this scoring is NOT in the ledger: {entry['error']}"
    text = f"{dataset} had been scored {entry['scored_before']} times in the ledger ({entry['ledger']}) before this number"
    if entry.get("scored_before_ledger"):
        text += f", and at least {entry['scored_before_ledger']} times before the ledger began (docs/decisions.md)"
    return text
