"""What an evaluation measured, as small typed objects that the Markdown writers and summaries take directly.

The JSON files keep their format (``{name}_metrics.json``, ``metrics.json["results"]``): :meth:`Evaluation.from_dict`
reads one, so a caller writes ``Evaluation.from_dict(r).auc.value`` instead of
``r["operating_points"]["default"]["auc"]["value"]``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Metric:
    """A value with its 95 % interval (``value`` None where a one-class set leaves it undefined)."""

    value: float | None
    ci: tuple[float, float] | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Metric:
        ci = d.get("ci")
        return cls(d["value"], (float(ci[0]), float(ci[1])) if ci else None)

    def __str__(self) -> str:
        """'v [lo, hi]', 'v' without an interval, 'undefined' without a value."""
        if self.value is None:
            return "undefined"
        return f"{self.value:.3f} [{self.ci[0]:.3f}, {self.ci[1]:.3f}]" if self.ci else f"{self.value:.3f}"


@dataclasses.dataclass(frozen=True)
class PointMetrics:
    """Every metric at one operating point (``threshold`` on p(malignant)), and the confusion counts."""

    threshold: float
    metrics: dict[str, Metric]
    counts: dict[str, int]

    @classmethod
    def from_dict(cls, d: dict) -> PointMetrics:
        metrics = {k: Metric.from_dict(v) for k, v in d.items() if isinstance(v, dict) and "value" in v}
        return cls(float(d["threshold"]) if d.get("threshold") is not None else float("nan"), metrics,
                   dict(d.get("counts") or {}))

    def __getitem__(self, key: str) -> Metric:
        return self.metrics[key]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One labelled set scored by one model: its size, the metrics at every operating point, per source for a set
    pooled from several (``by_source``), calibration error; ``record``: the whole saved result (what
    ``{name}_metrics.json`` holds); the labels and probabilities where the scoring was just done."""

    dataset: str
    n: int
    n_malignant: int
    points: dict[str, PointMetrics]
    by_source: dict[str, Evaluation] = dataclasses.field(default_factory=dict)
    ci_resampling: str = "images"          # what the intervals resample: images, or patients / duplicate groups
    ece: float | None = None               # expected calibration error (10 bins) at the model's temperature
    ece_before_temperature: float | None = None
    temperature: float = 1.0
    scorings: dict | None = None           # the ledger's count of this set's external scorings (ledger.record)
    record: dict = dataclasses.field(default_factory=dict, repr=False)  # everything saved: the metrics JSON
    y: np.ndarray | None = None            # (N,) 0/1 labels, (N,) p(malignant) calibrated and before the
    p: np.ndarray | None = None            # temperature, where the scoring was just done (never saved)
    p_raw: np.ndarray | None = None

    @classmethod
    def from_dict(cls, d: dict, dataset: str | None = None) -> Evaluation:
        return cls(d.get("dataset", dataset or ""), int(d["n"]), int(d.get("n_malignant", 0)),
                   {op: PointMetrics.from_dict(m) for op, m in d.get("operating_points", {}).items()},
                   {src: cls.from_dict(r, src) for src, r in (d.get("by_source") or {}).items()},
                   d.get("ci_resampling", "images"), d.get("ece"), d.get("ece_before_temperature"),
                   float(d.get("temperature", 1.0)), d.get("external_scorings"), d)

    def at(self, op: str = "default") -> PointMetrics:
        return self.points[op]

    @property
    def auc(self) -> Metric:
        """The AUC (the same at every operating point)."""
        return self.at("default")["auc"]
