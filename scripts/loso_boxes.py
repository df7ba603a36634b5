"""Step 17 of docs/loso.md: the held-out hospitals scored around boxes drawn less tightly than their masks' boxes.

    python scripts/loso_boxes.py RECIPE [AMOUNT]     # AMOUNT: 0.25 (up to 25 %); runs/loso/RECIPE

For each held-out hospital H, every image the recipe's folds scored gets the box around its mask moved and rescaled
at random by up to AMOUNT (``rcdnet.data.boxes.jitter_box``), seeded by the image's key, so that every model of every
recipe sees the same boxes; they are written as a CSV (``path,label,group,x0,y0,x1,y1``: runs/loso/boxes-25/H.csv).
Each fold is then scored on it with the README's own command

    rcdnet evaluate runs/loso/RECIPE/seedS/without-H --csv runs/loso/boxes-25/H.csv --out .../without-H/box25

(a finished fold is kept), and the predictions are gathered under the dataset's own keys as
runs/loso/RECIPE@box25/loso_predictions.csv, the file ``python scripts/loso_search.py ensembles`` compares. Prints
each hospital's ensemble AUC (the seeds' mean probability) around the masks' boxes and around the moved ones.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from rcdnet.data.boxes import jitter_box
from rcdnet.data.decode import read_image
from rcdnet.data.preprocess import lesion_box
from rcdnet.data.sources import load_dataset
from rcdnet.files import markdown_table, write_csv
from rcdnet.loso import PREDICTION_COLUMNS, scored_again
from rcdnet.runtime import environment

ROOT = Path("runs/loso")
SOURCES = ["busi", "bus-uclm", "breast", "udiat"]


def moved_box(key: str, box: tuple[int, int, int, int], shape: tuple[int, int], amount: float) -> tuple:
    """``box`` moved and rescaled by up to ``amount``, the same for a key wherever and whenever it is drawn."""
    seed = int(hashlib.sha256(f"{key}|{amount:g}".encode()).hexdigest()[:16], 16)
    return jitter_box(box, shape, np.random.default_rng(seed), amount)


def boxes_csv(held: str, rows: list[dict], samples: dict, amount: float, tag: str) -> Path:
    """The CSV of ``held``'s images (those in ``rows``, one seed's predictions; ``samples``: key -> Sample) with moved
    boxes; written once."""
    out = ROOT / f"boxes-{tag}" / f"{held}.csv"
    if out.is_file():
        return out
    lines = []
    for r in rows:
        s = samples[r["key"]]
        shape = read_image(s.path).shape[:2]
        box = lesion_box(s, shape)
        if box is None:
            raise SystemExit(f"{s.path}: no lesion box (no mask beside it), yet the fold scored it as {r['key']}")
        x0, y0, x1, y1 = moved_box(s.key, box, shape, amount)
        lines.append({"path": str(s.path.resolve()), "label": r["label"], "group": r["group"],
                      "x0": x0, "y0": y0, "x1": x1, "y1": y1})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out, lines, ["path", "label", "group", "x0", "y0", "x1", "y1"])
    return out


def ensemble_auc(rows: list[dict], keys: list[str]) -> float:
    """AUC of the seeds' mean probability over ``keys`` (``rows``: one per key and seed)."""
    scores = {k: [] for k in keys}
    label = {}
    for r in rows:
        scores[r["key"]].append(float(r["p_malignant"]))
        label[r["key"]] = r["label"] == "malignant"
    return float(roc_auc_score([label[k] for k in keys], [np.mean(scores[k]) for k in keys]))


def main(recipe: str, amount: float = 0.25) -> None:
    tag = f"{round(amount * 100)}"
    if not (ROOT / recipe / "loso_predictions.csv").is_file():
        raise SystemExit(f"{ROOT / recipe}: no loso_predictions.csv (its folds are not all finished: run its "
                         "`rcdnet cv --by-source` command first)")
    with open(ROOT / recipe / "loso_predictions.csv", newline="") as fh:
        plain = list(csv.DictReader(fh))
    seeds = sorted({int(r["seed"]) for r in plain})
    moved, table = [], []
    for held in SOURCES:
        mine = [r for r in plain if r["source"] == held]
        samples = {s.key: s for s in load_dataset(held)[0]}
        boxes = boxes_csv(held, [r for r in mine if int(r["seed"]) == seeds[0]], samples, amount, tag)
        key_of = {str(s.path.resolve()): k for k, s in samples.items()}  # the CSV's key is its path
        got = []
        for s in seeds:
            fold = ROOT / recipe / f"seed{s}" / f"without-{held}"
            done = f"{boxes.stem}_predictions.csv"
            with open(scored_again(fold, fold / f"box{tag}", done, "--csv", str(boxes)) / done, newline="") as fh:
                got += [{"key": key_of[r["key"]], "source": held, "label": r["label"], "group": r["group"],
                         "seed": s, "p_malignant": r["p_malignant"]} for r in csv.DictReader(fh)]
        keys = sorted({r["key"] for r in got})
        if len(got) != len(seeds) * len(keys):
            raise SystemExit(f"{held}: the folds scored different images around the moved boxes")
        scored_keys = set(keys)
        table.append([held, len(keys), f"{ensemble_auc([r for r in mine if r['key'] in scored_keys], keys):.3f}",
                      f"{ensemble_auc(got, keys):.3f}"])
        moved += got
    (ROOT / f"{recipe}@box{tag}").mkdir(parents=True, exist_ok=True)
    write_csv(ROOT / f"{recipe}@box{tag}" / "loso_predictions.csv", moved, PREDICTION_COLUMNS)
    env = environment()
    print("\n".join([f"`python scripts/loso_boxes.py {recipe} {amount:g}` at commit `{env['commit']}`, {env['date']} "
                     f"({env['hardware']}); seeds {', '.join(map(str, seeds))}, the seeds' mean probability.", "",
                     *markdown_table(["held out", "images", "ensemble AUC, the mask's box",
                                      f"ensemble AUC, the box moved by up to {amount:.0%}"], table)]))


if __name__ == "__main__":
    main(sys.argv[1], *(float(a) for a in sys.argv[2:3]))
