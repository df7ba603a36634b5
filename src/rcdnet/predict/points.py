"""Operating points: the p(malignant) thresholds a model decides at, as one frozen type.

``default`` is p >= 0.5; ``high_sensitivity`` (the rule-out point) is the highest threshold that keeps sensitivity
>= the target on the validation split that chose it. Checkpoints, ONNX metadata, ensembles and site calibrations
store them as a plain ``{name: threshold}`` mapping (:meth:`OperatingPoints.to_dict` / :meth:`from_dict`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

DEFAULT = 0.5


def threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, target: float = 0.95) -> float:
    """A threshold whose sensitivity on (y, p) is at least ``target``, as high as possible: choose it on
    validation only. It lies midway between the last positive that must be caught and the next lower score, never
    on a score itself, so rounding in a later recomputation of the same probabilities cannot flip a case."""
    y = np.asarray(y, int)
    p = np.asarray(p, float)
    pos = np.sort(p[y == 1])[::-1]
    if len(pos) == 0:
        raise ValueError("no malignant cases: a sensitivity target cannot be set")
    k = int(np.ceil(target * len(pos)))  # this many positives must be at or above the threshold
    t = pos[k - 1]
    below = p[p < t]
    return float((t + below.max()) / 2 if len(below) else t * (1 - 1e-6))


@dataclasses.dataclass(frozen=True)
class OperatingPoints:
    """``default`` and, where one was chosen, ``high_sensitivity`` (None: the model has no rule-out point)."""

    default: float = DEFAULT
    high_sensitivity: float | None = None

    @classmethod
    def choose(cls, y: np.ndarray, p: np.ndarray, target: float) -> OperatingPoints:
        """Both points from (N,) labels (1 = malignant) and p(malignant) of a validation split."""
        return cls(DEFAULT, threshold_for_sensitivity(y, p, target))

    @classmethod
    def from_dict(cls, d: Mapping[str, float] | None, where: str = "operating points") -> OperatingPoints:
        """From a stored mapping (missing or empty: p >= 0.5 only); unknown names or non-numbers are an error."""
        d = dict(d or {})
        unknown = set(d) - {"default", "high_sensitivity"}
        if unknown or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in d.values()):
            raise ValueError(f"{where}: thresholds must map the operating points default / high_sensitivity to "
                             f"numbers, got {d!r}")
        hs = d.get("high_sensitivity")
        return cls(float(d.get("default", DEFAULT)), None if hs is None else float(hs))

    def to_dict(self) -> dict[str, float]:
        """``{name: threshold}`` in the order the reports list them."""
        out = {"default": self.default}
        if self.high_sensitivity is not None:
            out["high_sensitivity"] = self.high_sensitivity
        return out

    def decide(self, p_malignant: float) -> dict[str, bool]:
        """Whether ``p_malignant`` is called malignant at each point."""
        return {name: p_malignant >= t for name, t in self.to_dict().items()}
