"""Choose the denoiser by the rule of docs/denoiser.md: is a cheaper non-local-means setting as good across hospitals?

    python scripts/choose_denoiser.py run      # both recipes' leave-one-source-out folds -> runs/denoiser/RECIPE/FOLD
    python scripts/choose_denoiser.py table    # the rule applied: the page's Results section (markdown)

`run` trains, on this machine and at this commit, the two folds of docs/selection.md (BUSI alone with BUS-UCLM held
out, BUS-UCLM alone with BUSI held out) for the default recipe (`roi`, search window 15) and the cheaper one
(`roi_nlm7`, search window 7), with the same seed (so the same splits and augmentation draws): the only difference is
the denoiser. No fold is scored on UDIAT. Finished steps are skipped, so it resumes.
`table` compares them, without test-time augmentation (the default), on the transfer score and on the BUSI fold's
in-source validation AUC, with the paired cluster bootstrap of the selection rule.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import select_default as sel  # noqa: E402  (the selection's own fold and bootstrap helpers)

sel.ROOT = Path("runs/denoiser")
BASELINE, CHEAP = "roi", "roi_nlm7"
MARGIN = 0.02  # largest loss (baseline - cheap) in either measure's point estimate that the rule accepts


def run() -> None:
    for name, config in sel._configs([BASELINE, CHEAP]).items():
        for fold, (train_on, held_out) in sel.FOLDS.items():
            sel._train(config, sel.ROOT / name / fold, f"[{train_on}]", f"[{held_out}]")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("run", "table"):
        sys.exit(__doc__)
    run() if sys.argv[1] == "run" else table()  # noqa: F821 (table below)
