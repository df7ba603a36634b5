"""The site-validation workflow demonstrated with UDIAT as the "new site" (docs/site_validation.md).

    python scripts/site_demo.py NAME=MODEL [NAME=MODEL ...] > docs/site_validation.md

Runs `rcdnet site-validate MODEL --dataset udiat --out runs/site-demo/NAME` for each model, copies the figures to
docs/figures/site/NAME/ and prints the page: every generated report, under the framing that says what UDIAT is here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

OUT = Path("runs/site-demo")
FIGURES = Path("docs/figures/site")


def main(pairs: list[str]) -> None:
    if not pairs or any("=" not in p for p in pairs):
        sys.exit(__doc__)
    print("# Site validation, demonstrated on UDIAT\n")
    print("`rcdnet site-validate` answers a clinic's two questions before it relies on a model: how does it do on our "
          "own cases, and where should our rule-out threshold sit? Here UDIAT plays the new site (163 cases, "
          "grouped by its duplicate pairs). This is a demonstration of the workflow, not a selection step: nothing "
          "chooses a configuration by these numbers, and each run below is one more scoring of UDIAT, counted as "
          "such (UDIAT had been scored more than sixty times before). Every number that a fitted parameter could "
          "flatter is cross-validated by group (each case is scored by a calibration and threshold fitted without "
          "it); the model's AUC, with nothing fitted, is on all cases.\n")
    print("Made by `python scripts/site_demo.py " + " ".join(pairs) + "`; each report carries its commit, hardware "
          "and date. `default-usaug_320` is the default run (`make main`: BUSI, ultrasound-shift augmentation, 320 px, "
          "mirror TTA); `paper-busi` is the paper's recipe trained on BUSI alone (the BUSI fold of "
          "`scripts/select_default.py run paper`). Neither was trained on UDIAT.\n")
    for pair in pairs:
        name, model = pair.split("=", 1)
        out = OUT / name
        subprocess.run([sys.executable, "-m", "rcdnet", "site-validate", model, "--dataset", "udiat", "--out",
                        str(out), "--quiet"], check=True, stdout=subprocess.DEVNULL)
        figures = FIGURES / name
        figures.mkdir(parents=True, exist_ok=True)
        for f in ("learning_curve.png", "reliability.png"):
            shutil.copy(out / f, figures / f)
        text = (out / "site_validation.md").read_text()
        text = text.replace("](learning_curve.png)", f"](figures/site/{name}/learning_curve.png)")
        text = text.replace("](reliability.png)", f"](figures/site/{name}/reliability.png)")
        print(f"## {name}: `{model}`\n")
        print("\n".join(("#" + line) if line.startswith("#") else line for line in text.splitlines()[1:]))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
