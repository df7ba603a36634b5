"""What ``rcdnet explain`` does, as one call: heat-map pictures of chosen images, the agreement table against the
lesion masks, and the Figure-4 grid."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rcdnet.data.samples import DataProblem, Sample
from rcdnet.explain.cam import METHODS
from rcdnet.explain.figure import figure4
from rcdnet.explain.images import explain_samples
from rcdnet.explain.table import agreement_table, write_table
from rcdnet.files import write_csv
from rcdnet.predict.pytorch import TorchPredictor

EVALUATE_METHODS = ["gradcam", "gradcam++", "eigencam", "layercam"]  # --evaluate's default: the fast methods


@dataclasses.dataclass
class Explained:
    rows: list[dict] = dataclasses.field(default_factory=list)      # one per pictured image
    table: str | None = None                                        # the agreement table (Markdown)
    figure: dict | None = None                                      # Figure 4: cell -> image key
    problems: list[DataProblem] = dataclasses.field(default_factory=list)
    written: list[str] = dataclasses.field(default_factory=list)


def check_methods(methods: list[str]) -> None:
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown heat-map method {m!r}; choose one of {', '.join(METHODS)}")


def run_explain(predictor: TorchPredictor, out: Path, *, pictures: list[Sample] | None = None,
                datasets: dict[str, list[Sample]] | None = None, evaluate: bool = False, figure: bool = False,
                method: str = "gradcam", methods: list[str] | None = None, layer: str | None = None,
                target: str = "malignant", road_images: int = 40, limit: int | None = None,
                cache_dir: Path | None = None, progress: bool = True, finder=None) -> Explained:
    """``pictures``: one heat-map PNG per sample and ``explain.csv`` (a region-of-interest model: pictures without a
    box or mask around the lesion ``finder`` found). ``datasets`` (name -> samples) feed ``evaluate``
    (``explain_metrics.{md,csv,json}``, ``methods``) and ``figure`` (``figure4.png``)."""
    methods = methods or EVALUATE_METHODS
    check_methods([method] + (methods if evaluate else []))
    res, out = Explained(), Path(out)
    if pictures is not None:
        res.rows, bad = explain_samples(predictor, pictures, out, method, layer, target, finder)
        res.problems += bad
        write_csv(out / "explain.csv", res.rows)
        res.written += [f"{len(res.rows)} heat-map PNGs", "explain.csv"]
    if evaluate:
        rows, bad = agreement_table(predictor, datasets, methods, layer, target, road_images=road_images,
                                    limit=limit, progress=progress)
        res.table = write_table(rows, out, f"Heat maps of {predictor.source} (target: {target})\n")
        res.problems += bad
        res.written += ["explain_metrics.md", "explain_metrics.csv", "explain_metrics.json"]
    if figure:
        res.figure = figure4(predictor, datasets, out / "figure4.png", method, layer, target, cache_dir=cache_dir)
        (out / "figure4.json").write_text(json.dumps(res.figure, indent=1))
        res.written += ["figure4.png", "figure4.json"]
    return res
