"""A site's own calibration, carried by a model file beside the original (``rcdnet site-validate`` writes it).

A :class:`SiteCalibration` maps the model's p(malignant) to the site's (temperature or Platt scaling on its logit,
or an isotonic step function) and holds the operating points chosen on the site's cases. :class:`SitePredictor`
wraps any predictor with it: ``predict``, ``evaluate`` and ``serve`` then answer with the site's calibration, and say
so (``calibration``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import expit

from rcdnet.predict.base import Predictor

METHODS = ("temperature", "platt", "isotonic")
EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


@dataclasses.dataclass
class SiteCalibration:
    """``method`` and its ``params`` (temperature: ``t``; platt: ``a``, ``b``; isotonic: ``x``, ``y`` knots),
    the site's ``thresholds`` on the recalibrated scale, and ``provenance`` (cases file, hashes, date, counts)."""

    method: str
    params: dict
    thresholds: dict[str, float]
    provenance: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"site calibration: unknown method {self.method!r} (one of {', '.join(METHODS)})")

    def apply(self, p_mal: np.ndarray) -> np.ndarray:
        """(N,) model p(malignant) -> (N,) the site's."""
        if self.method == "temperature":
            return expit(logit(p_mal) / self.params["t"])
        if self.method == "platt":
            return expit(self.params["a"] * logit(p_mal) + self.params["b"])
        return np.interp(np.asarray(p_mal, float), self.params["x"], self.params["y"])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str) -> SiteCalibration:
        try:
            site = cls(str(d["method"]), dict(d["params"]), {str(k): float(v) for k, v in d["thresholds"].items()},
                       dict(d.get("provenance") or {}))
            site.apply(np.array([0.2, 0.8]))  # the parameters it needs are there
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{where}: damaged site calibration ({type(exc).__name__}: {exc})") from None
        return site

    def describe(self) -> str:
        pv = self.provenance
        return (f"site calibration ({self.method}) from {pv.get('n_cases', '?')} local cases of "
                f"{pv.get('cases_file', '?')}, {pv.get('date', '?')}")


class SitePredictor(Predictor):
    """Any predictor answering with a site's calibration: probabilities mapped by it, its operating points."""

    def __init__(self, base: Predictor, site: SiteCalibration):
        self.base, self.site = base, site
        self.site_record = None  # applied here: wrapping again would apply it twice
        self.thresholds = dict(site.thresholds)
        self.calibration = site.describe()
        self.classes, self.preprocessor, self.model_name = base.classes, base.preprocessor, base.model_name
        self.source, self.val_keys, self.training_sources = base.source, base.val_keys, base.training_sources
        self.runtime = base.runtime

    @property
    def torch_predictor(self):
        return self.base.torch_predictor

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        probs = self.base.predict_arrays(images)
        mal = self.base.malignant_index
        p = self.site.apply(probs[:, mal])
        out = np.empty_like(probs)
        out[:, mal] = p
        rest = [i for i in range(probs.shape[1]) if i != mal]  # other classes keep their shares of 1 - p
        others = probs[:, rest].sum(axis=1, keepdims=True)
        out[:, rest] = np.where(others > 0, probs[:, rest] / np.maximum(others, 1e-12), 1 / len(rest)) * (1 - p)[:, None]
        return out


def with_site(predictor, record: dict | None, where: str):
    """``predictor`` wrapped with the site calibration ``record`` (from its model file), or as it is without one."""
    return predictor if not record else SitePredictor(predictor, SiteCalibration.from_dict(record, where))
