"""Write the model card of a finished training run, generated from its saved results.

    python scripts/model_card.py runs/main [docs/model_card.md]

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
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    run_dir = Path(sys.argv[1])
    page = Path(sys.argv[2]) if len(sys.argv) == 3 else Path("docs/model_card.md")
    if not (run_dir / "metrics.json").is_file():
        sys.exit(f"{run_dir}: no metrics.json (is it a finished training run?)")
    page.write_text(model_card(run_dir))
    print(f"written {page}")


if __name__ == "__main__":
    main()
