"""Copy a finished run's generated report and figures into the docs, unchanged except for image paths.

    python scripts/publish_results.py runs/main docs/results.md

Every number in the page comes from the run (report.md is written by `rcdnet train`); the command that made the
run, the commit, hardware and date are in its header.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    run_dir, page = Path(sys.argv[1]), Path(sys.argv[2])
    report = run_dir / "report.md"
    if not report.is_file():
        sys.exit(f"{report}: not found (is {run_dir} a finished run?)")
    figures = page.parent / "figures" / page.stem
    figures.mkdir(parents=True, exist_ok=True)
    text = report.read_text()

    def relink(m: re.Match) -> str:
        src = run_dir / m.group(2)
        shutil.copy(src, figures / src.name)
        return f"![{m.group(1)}]({figures.relative_to(page.parent) / src.name})"

    text = re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", relink, text)
    first, rest = text.split("\n", 1)
    text = (f"{first}\n\nPublished from the run directory `{run_dir}` by `python scripts/publish_results.py {run_dir} "
            f"{page}`; every number below was written by `rcdnet train` into that run's report.md.\n{rest}")
    cfg = (run_dir / "config.yaml").read_text()
    text += f"\n## Resolved configuration of this run\n\n```yaml\n{cfg}```\n"
    page.write_text(text)
    print(f"written {page} and {figures}/")


if __name__ == "__main__":
    main()
