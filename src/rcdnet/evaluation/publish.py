"""``rcdnet publish``: a finished run's generated report and figures copied into the docs, unchanged except for
image paths.

Every number in the page comes from the run; the commit, hardware and date are in its header, and the run's
configuration (config.yaml, or the benchmark's profile.yaml) is appended. A training run's report is rendered again
from its saved results with today's wording first (nothing is re-scored). Only a run made from a clean tree is
published, and only from a clean tree.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from rcdnet.evaluation.report import render_report
from rcdnet.runtime import environment


def publish(run_dir: str | Path, page: str | Path) -> Path:
    """Write ``page`` from ``run_dir``'s ``report.md`` (``rcdnet train``) or ``benchmark.md`` (``rcdnet benchmark``),
    its figures into ``<page's folder>/figures/<page's stem>/``. Returns the figures folder; a ValueError names
    what stops it (no report, a run or a tree with local changes)."""
    run_dir, page = Path(run_dir), Path(page)
    report = next((run_dir / n for n in ("report.md", "benchmark.md") if (run_dir / n).is_file()), None)
    if report is None:
        raise ValueError(f"{run_dir}: holds neither report.md nor benchmark.md (is it a finished run or benchmark?)")
    training = report.name == "report.md"
    made = (json.loads((run_dir / "metrics.json").read_text())["env"]["commit"] if training
            else report.read_text().split("\n## ", 1)[0])
    if "+local changes" in made:
        raise ValueError(f"{run_dir}: the run was made from a tree with local changes; publish only runs of a clean "
                         "commit")
    if training:
        if "+local changes" in environment()["commit"]:
            raise ValueError("this tree has local changes: commit them, then publish")
        render_report(run_dir)
    figures = page.parent / "figures" / page.stem
    figures.mkdir(parents=True, exist_ok=True)

    def relink(m: re.Match) -> str:
        src = run_dir / m.group(2)
        shutil.copy(src, figures / src.name)
        return f"![{m.group(1)}]({figures.relative_to(page.parent) / src.name})"

    text = re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", relink, report.read_text())
    first, rest = text.split("\n", 1)
    command = "rcdnet train" if training else "rcdnet benchmark"
    text = (f"{first}\n\nPublished from the run directory `{run_dir}` by `rcdnet publish {run_dir} {page}`; every "
            f"number below was written by `{command}` into that run's {report.name}.\n{rest}")
    config = (run_dir / ("config.yaml" if training else "profile.yaml")).read_text()
    page.write_text(text + f"\n## Resolved configuration of this run\n\n```yaml\n{config}```\n")
    return figures
