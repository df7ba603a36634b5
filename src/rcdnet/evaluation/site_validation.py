"""``rcdnet site-validate``: how a model does on a site's own labelled cases, and where that site's threshold sits.

Everything a fitted parameter could flatter is cross-validated: the local cases are split into k folds by patient
(StratifiedGroupKFold; duplicates and a CSV's group column keep their images together), the calibration and the
threshold are fitted on k - 1 folds and scored on the fold left out, and the held-out results are pooled. The
learning curve repeats that with only n of the fitting cases, for several n, to show how many local cases the
sensitivity target needs. The model's own AUC (nothing fitted) is reported on all cases.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from rcdnet.data.split import group_folds
from rcdnet.evaluation.calibration import expected_calibration_error
from rcdnet.evaluation.metrics import metrics_with_ci
from rcdnet.predict.points import OperatingPoints
from rcdnet.predict.site_calibration import METHODS, SiteCalibration, logit

SIZES = (20, 40, 80)  # fitting cases for the learning curve (plus all of them)


def fit_map(method: str, p: np.ndarray, y: np.ndarray) -> SiteCalibration:
    """A calibration map of ``method`` fitted on (p, y); thresholds are set by :func:`fit_site`."""
    z = logit(p)
    if method == "temperature":
        def nll(log_t):
            q = np.clip(expit(z / np.exp(log_t)), 1e-12, 1 - 1e-12)
            return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))
        params = {"t": float(np.exp(minimize_scalar(nll, bounds=(-4, 4), method="bounded").x))}
    elif method == "platt":
        lr = LogisticRegression(C=1e6).fit(z[:, None], y)
        params = {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    elif method == "isotonic":
        iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
        params = {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    else:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    return SiteCalibration(method, params, {})


def fit_site(method: str, p: np.ndarray, y: np.ndarray, target: float) -> SiteCalibration:
    """The map and the site's operating points on its scale: ``high_sensitivity`` for ``target``, ``default`` 0.5."""
    site = fit_map(method, p, y)
    site.thresholds = OperatingPoints.choose(y, site.apply(p), target).to_dict()
    return site


def check_cases(y: np.ndarray, groups: np.ndarray, folds: int, where: str) -> None:
    """Enough cases of each class, in enough groups, for ``folds`` folds; else an error naming ``where``."""
    for value, name in ((1, "malignant"), (0, "benign")):
        n_groups = len(set(groups[y == value]))
        if n_groups < folds:
            raise ValueError(f"{where}: {int((y == value).sum())} {name} cases in {n_groups} patient groups: "
                             f"{folds}-fold cross-validation needs at least {folds} (use --folds, or add cases)")


def cross_validated(p: np.ndarray, y: np.ndarray, groups: np.ndarray, method: str, target: float, folds: int,
                    seed: int = 0, fit=fit_site, subsample: int | None = None, rng=None) -> dict:
    """Held-out results: per case, its recalibrated p and the decision at the threshold fitted on the other folds
    (``subsample``: on that many of them, stratified, drawn by ``rng``). ``fit(method, p, y, target)`` is called
    once per fold on the fitting cases alone."""
    fold_of = group_folds([str(v) for v in y], list(groups), folds, seed)
    p_cal, above = np.zeros(len(y)), np.zeros(len(y), bool)
    for k in range(folds):
        fit_idx, test_idx = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        if subsample is not None and subsample < len(fit_idx):
            fit_idx = _stratified(fit_idx, y, subsample, rng)
        site = fit(method, p[fit_idx], y[fit_idx], target)
        p_cal[test_idx] = site.apply(p[test_idx])
        above[test_idx] = p_cal[test_idx] >= site.thresholds["high_sensitivity"]
    return {"p": p_cal, "malignant": above, "fold": fold_of}


def _stratified(idx: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` of ``idx`` keeping the class shares, at least 2 of each class."""
    out = []
    for value in (0, 1):
        members = idx[y[idx] == value]
        k = min(len(members), max(2, round(n * len(members) / len(idx))))
        out.append(rng.choice(members, size=k, replace=False))
    return np.concatenate(out)


def choose_method(p: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seed: int = 0) -> dict[str, float]:
    """Held-out log loss of each method (and of the model as it is, ``none``); the caller picks the lowest."""
    out = {"none": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1]))}
    for method in METHODS:
        held = cross_validated(p, y, groups, method, 0.95, folds, seed)["p"]
        out[method] = float(log_loss(y, np.clip(held, 1e-6, 1 - 1e-6), labels=[0, 1]))
    return out


def learning_curve(p: np.ndarray, y: np.ndarray, groups: np.ndarray, method: str, target: float, folds: int,
                   repeats: int = 20, seed: int = 0) -> list[dict]:
    """Held-out sensitivity and specificity at the locally fitted threshold when n fitting cases are used, for each
    n in :data:`SIZES` below the number available and for all: the mean over ``repeats`` draws, and the 2.5-97.5 %
    range of the draws."""
    n_fit = len(y) - len(y) // folds
    rows = []
    for n in [s for s in SIZES if s < n_fit] + [None]:
        rng = np.random.default_rng(seed)
        sens, spec = [], []
        for r in range(repeats if n is not None else 1):
            held = cross_validated(p, y, groups, method, target, folds, seed + r, subsample=n, rng=rng)
            sens.append(held["malignant"][y == 1].mean())
            spec.append((~held["malignant"][y == 0]).mean())
        rows.append({"fitting_cases": n if n is not None else f"all (~{n_fit})", "repeats": len(sens),
                     "sensitivity": float(np.mean(sens)), "sensitivity_range": _range(sens),
                     "specificity": float(np.mean(spec)), "specificity_range": _range(spec)})
    return rows


def _range(v: list[float]) -> list[float]:
    return [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]


@dataclasses.dataclass
class SiteResult:
    site: SiteCalibration        # fitted on every local case: what the new model file carries
    summary: dict                # every number of the report
    curves: dict                 # for the figures: (y, p) before and held-out after; the learning curve rows


def validate_site(p: np.ndarray, y: np.ndarray, groups: np.ndarray, *, original: dict[str, float], target: float,
                  folds: int, method: str = "auto", n_boot: int = 2000, seed: int = 0, where: str = "cases"
                  ) -> SiteResult:
    """The whole analysis on the model's p(malignant) for the local cases (see the module docstring)."""
    check_cases(y, groups, folds, where)
    losses = choose_method(p, y, groups, folds, seed)
    if method == "auto":
        method = min(METHODS, key=lambda m: (losses[m], METHODS.index(m)))
    held = cross_validated(p, y, groups, method, target, folds, seed)
    decision = held["malignant"].astype(float)  # per-fold thresholds: scored as decisions at 0.5
    at_local = metrics_with_ci(y, decision, 0.5, n_boot, seed, groups)
    before = {op: metrics_with_ci(y, p, t, n_boot, seed, groups) for op, t in original.items()}
    summary = {
        "n_cases": int(len(y)), "n_malignant": int(y.sum()), "n_groups": int(len(set(groups))), "folds": folds,
        "target_sensitivity": target, "method": method, "held_out_log_loss": losses,
        "auc": metrics_with_ci(y, p, 0.5, n_boot, seed, groups)["auc"],
        "ece_before": expected_calibration_error(y, p), "ece_after_held_out": expected_calibration_error(y, held["p"]),
        "original_operating_points": {op: {k: before[op][k] for k in ("sensitivity", "specificity")} | {
            "threshold": t} for op, t in original.items()},
        "local_threshold_held_out": {k: at_local[k] for k in ("sensitivity", "specificity", "accuracy")},
        "learning_curve": learning_curve(p, y, groups, method, target, folds, seed=seed),
    }
    last = summary["learning_curve"][-1]  # all fitting cases: one draw, so its interval is the bootstrap's
    last["sensitivity_range"], last["specificity_range"] = at_local["sensitivity"]["ci"], at_local["specificity"]["ci"]
    last["range"] = "95 % CI over groups"
    site = fit_site(method, p, y, target)
    return SiteResult(site, summary, {"before": (y, p), "after": (y, held["p"])})


def local_cases(predictor, samples: list, cache_dir=None, progress: bool = False
                ) -> tuple[list, np.ndarray, np.ndarray, np.ndarray, list]:
    """(readable samples, the model's p(malignant) (N,), labels (N,), groups (N,), problems): groups join a CSV's
    group column with the duplicates screening finds among the cases (near-copies count as one patient)."""
    from rcdnet.data.duplicates import find_duplicates, group_pool
    from rcdnet.data.preprocess import preprocess_samples

    kept, images, problems = preprocess_samples(samples, predictor.preprocessor, cache_dir, progress)
    if not kept:
        raise ValueError("no readable local cases")
    pairs, _ = find_duplicates(kept, cache_dir=cache_dir, progress=progress)
    group_pool(kept, pairs)
    p = predictor.predict_arrays(images)[:, predictor.malignant_index]
    y = np.array([int(s.label == "malignant") for s in kept])
    return kept, p, y, np.array([s.group for s in kept]), problems


def _fmt(m: dict) -> str:
    v, ci = m["value"], m["ci"]
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def site_markdown(s: dict, model: str, cases: str, env: dict) -> str:
    """The report: the model on the local cases, its operating points there, the site's, and the learning curve."""
    held = s["local_threshold_held_out"]
    lines = [
        f"# Site validation: {model} on {cases}", "",
        f"commit `{env['commit']}`, {env['date']}, {env['hardware']}", "",
        f"{s['n_cases']} local cases ({s['n_malignant']} malignant) in {s['n_groups']} patient / duplicate groups; "
        f"{s['folds']}-fold cross-validation by group; intervals: 95 % bootstrap over groups.", "",
        "## The model as it is", "",
        f"- AUC {_fmt(s['auc'])} (nothing fitted on these cases)",
        f"- calibration: ECE {s['ece_before']:.3f}",
        *(f"- its `{op}` point (p >= {o['threshold']:.3f}, chosen at the development hospital): sensitivity "
          f"{_fmt(o['sensitivity'])}, specificity {_fmt(o['specificity'])}"
          for op, o in s["original_operating_points"].items()), "",
        "## Recalibrated on these cases (held-out numbers: each case scored by a fit that never saw it)", "",
        f"- calibration method: **{s['method']}**, chosen by held-out log loss: "
        + ", ".join(f"{k} {v:.3f}" for k, v in s["held_out_log_loss"].items()),
        f"- ECE after recalibration, held out: {s['ece_after_held_out']:.3f} (before: {s['ece_before']:.3f})",
        f"- at the threshold chosen on the other folds for sensitivity >= {s['target_sensitivity']:.2f}: "
        f"sensitivity {_fmt(held['sensitivity'])}, specificity {_fmt(held['specificity'])}", "",
        "## How many local cases the target needs", "",
        f"Held-out sensitivity at the locally chosen threshold (target {s['target_sensitivity']:.2f}) when only n "
        "cases are used to fit; the mean over repeated draws and the range (2.5-97.5 %) of the draws (for all "
        "cases, one fit per fold: its 95 % bootstrap interval over groups instead).", "",
        "| fitting cases | sensitivity (range) | specificity (range) |", "|---|---|---|",
        *(f"| {r['fitting_cases']} | {r['sensitivity']:.3f} ({r['sensitivity_range'][0]:.3f}-"
          f"{r['sensitivity_range'][1]:.3f}) | {r['specificity']:.3f} ({r['specificity_range'][0]:.3f}-"
          f"{r['specificity_range'][1]:.3f}) |" for r in s["learning_curve"]), "",
        "![learning curve](learning_curve.png) ![reliability](reliability.png)", ""]
    return "\n".join(lines)


def plot_learning_curve(rows: list[dict], target: float, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    xs = list(range(len(rows)))
    for key, colour in (("sensitivity", "C3"), ("specificity", "C0")):
        ys = [r[key] for r in rows]
        lo, hi = [r[f"{key}_range"][0] for r in rows], [r[f"{key}_range"][1] for r in rows]
        ax.errorbar(xs, ys, yerr=[np.subtract(ys, lo), np.subtract(hi, ys)], fmt="o-", color=colour, capsize=3,
                    label=f"held-out {key}")
    ax.axhline(target, ls=":", color="grey", label=f"target sensitivity {target:.2f}")
    ax.set_xticks(xs, [str(r["fitting_cases"]) for r in rows])
    ax.set_xlabel("local cases used to fit")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
