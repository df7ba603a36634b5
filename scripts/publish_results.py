"""Copy a finished run's generated report and figures into the docs, unchanged except for image paths.

    python scripts/publish_results.py runs/main docs/results.md                 # report.md of `rcdnet train`
    python scripts/publish_results.py runs/benchmark-cpu docs/benchmark.md      # benchmark.md of `rcdnet benchmark`

Every number in the page comes from the run; the commit, hardware and date are in its header, and the run's
configuration (config.yaml, or the benchmark's profile.yaml) is appended. A training run's report is rendered again
from its saved results with today's wording first (nothing is re-scored). Only a run made from a clean tree is
published, and only from a clean tree.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    run_dir, page = Path(sys.argv[1]), Path(sys.argv[2])
    report = next((run_dir / n for n in ("report.md", "benchmark.md") if (run_dir / n).is_file()), None)
    if report is None:
        sys.exit(f"{run_dir}: holds neither report.md nor benchmark.md (is it a finished run or benchmark?)")
    command = "rcdnet train" if report.name == "report.md" else "rcdnet benchmark"
    made = (json.loads((run_dir / "metrics.json").read_text())["env"]["commit"] if report.name == "report.md"
            else report.read_text().split("\n## ", 1)[0])
    if "+local changes" in made:
        sys.exit(f"{run_dir}: the run was made from a tree with local changes; publish only runs of a clean commit")
    if report.name == "report.md":
        from rcdnet.evaluation.report import render_report
        from rcdnet.runtime import environment

        if "+local changes" in environment()["commit"]:
            sys.exit("this tree has local changes: commit them, then publish")
        render_report(run_dir)
    config = run_dir / ("config.yaml" if report.name == "report.md" else "profile.yaml")
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
            f"{page}`; every number below was written by `{command}` into that run's {report.name}.\n{rest}")
    cfg = config.read_text()
    text += f"\n## Resolved configuration of this run\n\n```yaml\n{cfg}```\n"
    page.write_text(text)
    print(f"written {page} and {figures}/")


if __name__ == "__main__":
    main()
