"""The shift suite: AUC on the validation images under acquisition shifts (``data.shifts``), and the overlay
(shortcut) analysis: how calipers / text / colour split across classes and what AUC is with and without them.

Shifts are applied to the raw image, then the model's own preprocessing runs, as for a new scanner's image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from rcdnet.data.boxes import BoxError
from rcdnet.data.decode import ImageReadError, read_image
from rcdnet.data.inputs import VALIDATION, named_dataset
from rcdnet.data.overlays import detect_overlays
from rcdnet.data.preprocess import (
    cache_name,
    cut_gray,
    default_cache_dir,
    preprocess_samples,
    save_npy_atomic,
)
from rcdnet.data.samples import DataProblem, Sample
from rcdnet.data.shifts import LEVELS, SHIFTS, apply_shift
from rcdnet.evaluation.metrics import bootstrap_ci
from rcdnet.predict.points import threshold_for_sensitivity
from rcdnet.files import markdown_table, write_csv, write_json
from rcdnet.predict.pytorch import TorchPredictor
from rcdnet.runtime import parallel_map


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if len(set(y)) == 2 else float("nan")


def _shifted_images(predictor: TorchPredictor, grays: list[np.ndarray], tokens: list[str], name: str, level: int,
                    seed: int, cache_dir: Path | None) -> np.ndarray:
    """(N, S, S) uint8: each image shifted (seeded by its position) and preprocessed; cached on disk per image, so
    the suite's other test-time variants and every configuration with the same preprocessing reuse the work."""
    pre = predictor.preprocessor
    cache = Path(cache_dir or default_cache_dir()) / "shifted" / pre.signature() / f"{name}{level}"
    cache.mkdir(parents=True, exist_ok=True)

    def shifted(i: int) -> np.ndarray:
        shift_seed = seed * 1_000_003 + i
        f = cache / f"{tokens[i]}-{shift_seed}.npy"
        if f.exists():
            return np.load(f)
        img = grays[i] if name == "none" else apply_shift(grays[i], name, level, shift_seed)
        arr = pre.finish(np.repeat(img[..., None], 3, axis=2))  # grays hold what the model classifies (ROI: cut)
        save_npy_atomic(f, arr)
        return arr

    out = list(parallel_map(shifted, range(len(grays))))
    return np.stack(out)


def shift_suite(predictor: TorchPredictor, samples: list[Sample], shifts: list[str] | None = None,
                levels: tuple[int, ...] = LEVELS, seed: int = 0, n_boot: int = 500, adabn: bool = False,
                progress: bool = True, cache_dir: Path | None = None
                ) -> tuple[list[dict], list[DataProblem], list[Sample], np.ndarray]:
    """One row per (shift, level) with AUC and its 95 % CI; the first row is the unshifted baseline. Also returns
    the files that could not be read, and the readable samples with their unshifted malignancy probabilities.
    Threshold transfer: the high-sensitivity threshold is chosen on the unshifted images (as in training, for the
    predictor as it is, TTA included) and each row gives the sensitivity and specificity it keeps under the shift.
    ``adabn``: re-estimate batch-norm statistics on each shifted set's images before predicting it."""
    grays, tokens, ys, problems, kept = [], [], [], [], []
    for s in samples:
        try:
            grays.append(cut_gray(s, predictor.preprocessor))
            tokens.append(cache_name(s, predictor.preprocessor))
            ys.append(int(s.label == "malignant"))
            kept.append(s)
        except (ImageReadError, BoxError) as exc:
            problems.append(DataProblem(str(s.path), str(exc)))
    y = np.array(ys)
    names = shifts or list(SHIFTS)
    jobs = [("none", 0)] + [(n, lv) for n in names for lv in levels]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc="shift suite", unit="shift")
    rows, threshold, p_none = [], None, None
    for name, level in jobs:
        arr = _shifted_images(predictor, grays, tokens, name, level, seed, cache_dir)
        model = predictor.adapted(arr) if adabn else predictor
        p = model.predict_arrays(arr)[:, predictor.malignant_index]
        lo, hi = bootstrap_ci(y, p, 0.5, n_boot, seed)["auc"] if n_boot else (float("nan"),) * 2
        if threshold is None:  # the unshifted row comes first
            threshold = threshold_for_sensitivity(y, p, predictor.config.eval.target_sensitivity)
            p_none = p
        rows.append({"shift": name, "level": level, "auc": _auc(y, p), "auc_low": lo, "auc_high": hi,
                     "accuracy": float(((p >= predictor.thresholds["default"]).astype(int) == y).mean()),
                     "threshold_hs": threshold, "sensitivity_hs": float((p[y == 1] >= threshold).mean()),
                     "specificity_hs": float((p[y == 0] < threshold).mean())})
    base = rows[0]["auc"]
    for r in rows:
        r["auc_drop"] = base - r["auc"]
    return rows, problems, kept, p_none


def overlay_analysis(predictor: TorchPredictor, samples: list[Sample], p_mal: np.ndarray | None = None) -> dict:
    """Overlay counts per class, and AUC on images with and without overlays."""
    def detect(s: Sample):
        try:
            return detect_overlays(read_image(s.path))
        except ImageReadError:
            return None

    flags, ys, keep = [], [], []
    for i, (s, ov) in enumerate(zip(samples, parallel_map(detect, samples))):
        if ov is None:
            continue
        flags.append((ov.has_colour, ov.has_marks))
        ys.append(int(s.label == "malignant"))
        keep.append(i)
    flags_a, y = np.array(flags, bool).reshape(-1, 2), np.array(ys)
    anyf = flags_a.any(1)
    out = {"n": len(y), "per_class": {}}
    for cls, v in (("benign", 0), ("malignant", 1)):
        sel = y == v
        out["per_class"][cls] = {"images": int(sel.sum()), "with_colour": int(flags_a[sel, 0].sum()),
                                 "with_marks_or_text": int(flags_a[sel, 1].sum()), "with_any": int(anyf[sel].sum())}
    if p_mal is not None:
        p = np.asarray(p_mal)[keep]
        out["auc_with_overlays"] = _auc(y[anyf], p[anyf]) if anyf.sum() > 2 else float("nan")
        out["auc_without_overlays"] = _auc(y[~anyf], p[~anyf]) if (~anyf).sum() > 2 else float("nan")
        out["n_with"], out["n_without"] = int(anyf.sum()), int((~anyf).sum())
    return out


def summarise(rows: list[dict]) -> dict:
    shifted = [r for r in rows if r["shift"] != "none"]
    moderate = [r for r in shifted if r["level"] == 2]
    worst = min(shifted, key=lambda r: r["auc"])
    worst_mod = min(moderate, key=lambda r: r["auc"]) if moderate else worst
    out = {"baseline_auc": rows[0]["auc"], "worst_auc": worst["auc"], "worst_shift": f"{worst['shift']}@{worst['level']}",
           "worst_moderate_auc": worst_mod["auc"], "worst_moderate_shift": worst_mod["shift"],
           "max_moderate_drop": max((r["auc_drop"] for r in moderate), default=float("nan"))}
    if "sensitivity_hs" in rows[0]:
        low = min(moderate or shifted, key=lambda r: r["sensitivity_hs"])
        out.update(sensitivity_hs=rows[0]["sensitivity_hs"], worst_moderate_sensitivity_hs=low["sensitivity_hs"],
                   worst_moderate_sensitivity_hs_shift=low["shift"],
                   mean_moderate_sensitivity_hs=float(np.mean([r["sensitivity_hs"] for r in moderate or shifted])))
    return out


def write_outputs(out_dir: Path, rows: list[dict], overlays: dict | None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "robustness.csv", rows)
    summary = summarise(rows)
    names = sorted({r["shift"] for r in rows if r["shift"] != "none"})
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for n in names:
        pts = sorted((r["level"], r["auc"]) for r in rows if r["shift"] == n)
        ax.plot([0] + [p[0] for p in pts], [rows[0]["auc"]] + [p[1] for p in pts], "o-", label=n, ms=3)
    ax.axhline(rows[0]["auc"] - 0.03, ls=":", color="grey", label="baseline - 0.03")
    ax.set_xticks([0, 1, 2, 3], ["none", "mild", "moderate", "strong"])
    ax.set_ylabel("validation AUC")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "robustness.png")
    plt.close(fig)
    levels = ["mild", "moderate", "strong"]

    def table(cell) -> list[str]:
        """One row per shift, one column per level; the unshifted baseline first."""
        rows_md = [["none", cell(rows[0]), "", ""]]
        for n in names:
            rows_md.append([n] + [next((cell(r) for r in rows if r["shift"] == n and r["level"] == lv), "")
                                  for lv in LEVELS])
        return markdown_table(["shift"] + levels, rows_md)

    auc_lines = table(lambda r: f"{r['auc']:.3f} [{r['auc_low']:.3f}, {r['auc_high']:.3f}]" if r["shift"] == "none"
                      else f"{r['auc']:.3f} ({-r['auc_drop']:+.3f})")
    md = ["# Shift suite: validation AUC under acquisition shifts", "",
          "AUC (change from the unshifted baseline). " + json.dumps(summary), "", *auc_lines, ""]
    if "sensitivity_hs" in rows[0]:
        md += [f"## Threshold transfer: sensitivity / specificity at p >= {rows[0]['threshold_hs']:.4f}, the "
               "high-sensitivity threshold chosen on the unshifted images", "",
               *table(lambda r: f"{r['sensitivity_hs']:.3f} / {r['specificity_hs']:.3f}"), ""]
    if overlays:
        md += ["## Overlays (calipers, text, colour)", "", "```", json.dumps(overlays, indent=1), "```"]
    (out_dir / "robustness.md").write_text("\n".join(md) + "\n")
    write_json(out_dir / "robustness.json", {"summary": summary, "rows": rows, "overlays": overlays})
    return summary


def run_robustness(predictor: TorchPredictor, out_dir: Path, *, samples=None, shifts: list[str] | None = None,
                   levels: tuple[int, ...] = LEVELS, seed: int = 0, n_boot: int = 500, adabn: bool = False,
                   data_root: str | Path | None = None, cache_dir: Path | None = None, progress: bool = True
                   ) -> tuple[dict, list[DataProblem]]:
    """``rcdnet robustness``: the shift suite on ``samples`` (default: the run's validation split), the overlay
    analysis on them and on the run's external sets, written to ``out_dir``. Returns (summary, skipped files)."""
    if samples is None:
        samples, _ = named_dataset(VALIDATION, data_root, predictor)
    rows, problems, kept, p_mal = shift_suite(predictor, samples, shifts, levels, seed, n_boot, adabn=adabn,
                                              progress=progress, cache_dir=cache_dir)
    if adabn:  # the overlay analysis scores the model as it is, without adaptation
        p_mal = predictor.predict_arrays(preprocess_samples(kept, predictor.preprocessor, cache_dir)[1])[
            :, predictor.malignant_index]
    overlays = {VALIDATION: overlay_analysis(predictor, kept, p_mal)}
    for name in predictor.config.data.external:
        overlays[name] = overlay_analysis(predictor, named_dataset(name, data_root, predictor)[0])
    return write_outputs(out_dir, rows, overlays), problems
