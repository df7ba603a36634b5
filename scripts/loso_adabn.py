"""Step 15 of docs/loso.md: AdaBN at the new hospital, on a recipe's finished leave-one-source-out models.

    python scripts/loso_adabn.py [RECIPE]     # default: nonlm_roi_e10x3 (runs/loso/RECIPE)

For every fold (seed S, held-out hospital H) it runs the README's own command

    rcdnet evaluate runs/loso/RECIPE/seedS/without-H --dataset H --adabn --out runs/loso/RECIPE/seedS/without-H/adabn

(batch-norm statistics re-estimated on H's images, never its labels; operating points chosen again on the fold's own
validation split adapted the same way; a finished fold is kept), then scores each hospital as the shipped ensemble
is scored (the seeds' mean probability) with and without AdaBN, prints both tables and the decision of step 15.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rcdnet.evaluation.held_out import HeldOutScore
from rcdnet.files import markdown_table
from rcdnet.loso import scored_again
from rcdnet.runtime import environment

ROOT = Path("runs/loso")
SOURCES = ["busi", "bus-uclm", "breast", "udiat"]
SEEDS = [0, 1, 2]


def decide(plain: dict[str, HeldOutScore], adapted: dict[str, HeldOutScore]) -> tuple[bool, str]:
    """Step 15: calibration error lower at >= 3 of 4 hospitals, mean AUC down <= 0.01, none down > 0.02."""
    better = sum(adapted[h].ensemble_ece < plain[h].ensemble_ece for h in plain)
    d_mean = np.mean([adapted[h].ensemble_auc - plain[h].ensemble_auc for h in plain])
    d_worst = min(adapted[h].ensemble_auc - plain[h].ensemble_auc for h in plain)
    ok = bool(better >= 3 and d_mean >= -0.01 and d_worst >= -0.02)
    return ok, (f"calibration error lower at {better} of {len(plain)} hospitals (needed: 3); ensemble AUC change: "
                f"mean {d_mean:+.3f} (allowed: -0.010), largest fall {d_worst:+.3f} (allowed: -0.020). Decision: "
                + ("**AdaBN becomes the first step at a new hospital**" if ok else "**AdaBN does not help; nothing "
                                                                                  "changes**"))


def main(recipe: str = "nonlm_roi_e10x3") -> None:
    base = ROOT / recipe
    plain, adapted = {}, {}
    for h in SOURCES:
        folds = [base / f"seed{s}" / f"without-{h}" for s in SEEDS]
        plain[h] = HeldOutScore.from_folds(folds, h)
        done = f"{h}_metrics.json"
        adapted[h] = HeldOutScore.from_folds([scored_again(f, f / "adabn", done, "--dataset", h, "--adabn")
                                              for f in folds], h)
    env = environment()
    rows = [[h, f"{plain[h].ensemble_auc:.3f} / {adapted[h].ensemble_auc:.3f}",
             f"{plain[h].ensemble_ece:.3f} / {adapted[h].ensemble_ece:.3f}",
             f"{plain[h].ensemble_mean_p:.3f} / {adapted[h].ensemble_mean_p:.3f} ({plain[h].malignant_share:.3f})",
             f"{plain[h].high_sensitivity_sensitivity:.3f} / {plain[h].high_sensitivity_specificity:.3f}",
             f"{adapted[h].high_sensitivity_sensitivity:.3f} / {adapted[h].high_sensitivity_specificity:.3f}"]
            for h in SOURCES]
    ok, text = decide(plain, adapted)
    print("\n".join([f"`python scripts/loso_adabn.py {recipe}` at commit `{env['commit']}`, {env['date']} "
                     f"({env['hardware']}); seeds {', '.join(map(str, SEEDS))}, the seeds' mean probability.", "",
                     *markdown_table(["held out", "ensemble AUC, as trained / AdaBN",
                                      "calibration error, as trained / AdaBN",
                                      "mean p, as trained / AdaBN (malignant share)",
                                      "rule-out sens / spec, as trained", "rule-out sens / spec, AdaBN"], rows),
                     "", text]))


if __name__ == "__main__":
    main(*sys.argv[1:2])
