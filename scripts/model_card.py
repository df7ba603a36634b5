"""Write the model card of a finished training run, generated from its saved results.

    python scripts/model_card.py runs/main [docs/model_card.md] [--loso runs/loso/roi]

The card states the intended use, the training data by source (site, scanner, counts), the operating points and what
they achieved on every evaluated set with intervals, subgroups (UDIAT by diagnosis, images with and without
overlays, per source), calibration, known failure modes and how to validate at a new site. Publish it only from a
clean tree (the card names the commit that wrote it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from rcdnet.evaluation.card import model_card


def main() -> None:
    args = sys.argv[1:]
    loso = None
    if "--loso" in args:
        i = args.index("--loso")
        if i + 1 >= len(args):
            sys.exit(__doc__)
        loso = Path(args[i + 1])
        del args[i:i + 2]
    if len(args) not in (1, 2):
        sys.exit(__doc__)
    run_dir = Path(args[0])
    page = Path(args[1]) if len(args) == 2 else Path("docs/model_card.md")
    if not (run_dir / "metrics.json").is_file():
        sys.exit(f"{run_dir}: no metrics.json (is it a finished training run?)")
    if loso is not None and not (loso / "loso_metrics.json").is_file():
        sys.exit(f"{loso}: no loso_metrics.json (is it a finished `rcdnet cv --by-source` folder?)")
    page.write_text(model_card(run_dir, loso_dir=loso))
    print(f"written {page}")


if __name__ == "__main__":
    main()
