"""Step 20 of docs/loso.md: mirror averaging at test time, on a recipe's finished leave-one-source-out models.

    python scripts/loso_tta.py RECIPE     # runs/loso/RECIPE
    python scripts/loso_search.py ensembles RECIPE RECIPE@tta      # the decision

For every fold (seed S, held-out hospital H) it runs the README's own command

    rcdnet evaluate runs/loso/RECIPE/seedS/without-H --dataset H --tta --out runs/loso/RECIPE/seedS/without-H/tta

(each image's probability the mean of the image's and its mirror's; a finished fold is kept), gathers the predictions
as runs/loso/RECIPE@tta/loso_predictions.csv (the file ``loso_search.py ensembles`` compares) and prints each
hospital's ensemble (the seeds' mean probability) plain and mirrored: AUC, calibration error, rule-out sensitivity
and specificity. Nothing is retrained and nothing is decided here: the decision is the ``ensembles`` command's.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from rcdnet.evaluation.held_out import HeldOutScore
from rcdnet.files import markdown_table, write_csv
from rcdnet.loso import PREDICTION_COLUMNS, scored_again
from rcdnet.runtime import environment

ROOT = Path("runs/loso")
SOURCES = ["busi", "bus-uclm", "breast", "udiat"]


def gathered(dirs: dict[int, Path], held: str) -> list[dict]:
    """One row per image and seed (``dirs``: seed -> folder with ``<held>_predictions.csv``), as loso_predictions.csv."""
    rows = []
    for seed, d in dirs.items():
        with open(d / f"{held}_predictions.csv", newline="") as fh:
            rows += [{"key": r["key"], "source": held, "label": r["label"], "group": r["group"], "seed": seed,
                      "p_malignant": r["p_malignant"]} for r in csv.DictReader(fh)]
    return rows


def row(held: str, plain: HeldOutScore, tta: HeldOutScore) -> list[str]:
    return [held, str(plain.n), f"{plain.ensemble_auc:.3f} / {tta.ensemble_auc:.3f}",
            f"{plain.ensemble_ece:.3f} / {tta.ensemble_ece:.3f}",
            f"{plain.high_sensitivity_sensitivity:.3f} / {plain.high_sensitivity_specificity:.3f}",
            f"{tta.high_sensitivity_sensitivity:.3f} / {tta.high_sensitivity_specificity:.3f}"]


def main(recipe: str) -> None:
    base = ROOT / recipe
    seeds = sorted(int(p.name[4:]) for p in base.glob("seed*") if p.name[4:].isdigit())
    if not seeds or not (base / "loso_predictions.csv").is_file():
        raise SystemExit(f"{base}: no finished folds (run its `rcdnet cv --by-source` command first)")
    rows, table = [], []
    for held in SOURCES:
        folds = {s: base / f"seed{s}" / f"without-{held}" for s in seeds}
        done = f"{held}_metrics.json"
        tta = {s: scored_again(f, f / "tta", done, "--dataset", held, "--tta") for s, f in folds.items()}
        table.append(row(held, HeldOutScore.from_folds(list(folds.values()), held),
                         HeldOutScore.from_folds(list(tta.values()), held)))
        rows += gathered(tta, held)
    (ROOT / f"{recipe}@tta").mkdir(parents=True, exist_ok=True)
    write_csv(ROOT / f"{recipe}@tta" / "loso_predictions.csv", rows, PREDICTION_COLUMNS)
    env = environment()
    print("\n".join([f"`python scripts/loso_tta.py {recipe}` at commit `{env['commit']}`, {env['date']} "
                     f"({env['hardware']}); seeds {', '.join(map(str, seeds))}, the seeds' mean probability.", "",
                     *markdown_table(["held out", "images", "ensemble AUC, plain / mirrored",
                                      "calibration error, plain / mirrored", "rule-out sens / spec, plain",
                                      "rule-out sens / spec, mirrored"], table)]))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
