"""Would early stopping have changed a finished training? For every ``history.json`` under the given run
directories (a single model's or a member's), the epoch it kept (best validation AUC) and, for each patience, whether
stopping that many epochs after the best so far would have kept another one.

    python scripts/patience_check.py runs/loso/roi_e10x3 runs/main [--patience 1 2 3 4 5]

Stopping never changes the epochs before it (each epoch is seeded from (seed, epoch) and the schedule from
``train.epochs``), so a training whose kept epoch survives a patience is unchanged by it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def kept_epoch(aucs: list[float], patience: int | None = None) -> int:
    """The 1-based epoch kept (first best, as the trainer's strict improvement keeps it), stopping ``patience`` epochs
    after the best so far (None: every epoch)."""
    best, at = -float("inf"), 0
    for i, a in enumerate(aucs):
        if a > best:
            best, at = a, i
        if patience and i - at >= patience:
            break
    return at + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--patience", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = ap.parse_args()
    files = sorted(f for r in args.runs for f in Path(r).rglob("history.json")
                   if not (f.parent / "members").is_dir())  # an ensemble's own history repeats its members'
    changed = {p: [] for p in args.patience}
    for f in files:
        aucs = [h["val_auc"] for h in json.loads(f.read_text())]
        full = kept_epoch(aucs)
        for p in args.patience:
            if kept_epoch(aucs, p) != full:
                changed[p].append(str(f.parent))
        print(f"{f.parent}: {len(aucs)} epochs, kept {full}; " + ", ".join(
            f"patience {p} keeps {kept_epoch(aucs, p)}" for p in args.patience))
    for p, runs in changed.items():
        print(f"patience {p}: {len(runs)} of {len(files)} trainings would have kept another epoch")


if __name__ == "__main__":
    main()
