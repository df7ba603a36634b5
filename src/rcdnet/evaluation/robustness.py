"""The shift suite: AUC on the validation images under acquisition shifts (``data.shifts``), and the overlay
(shortcut) analysis: how calipers / text / colour split across classes and what AUC is with and without them.

Shifts are applied to the raw image, then the model's own preprocessing runs, as for a new scanner's image.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from rcdnet.data.overlays import detect_overlays
from rcdnet.data.samples import DataProblem, ImageReadError, Sample, read_image, to_gray
from rcdnet.data.shifts import LEVELS, SHIFTS, apply_shift
from rcdnet.evaluation.metrics import bootstrap_ci
from rcdnet.inference import Predictor


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if len(set(y)) == 2 else float("nan")


def shift_suite(predictor: Predictor, samples: list[Sample], shifts: list[str] | None = None,
                levels: tuple[int, ...] = LEVELS, seed: int = 0, n_boot: int = 500, adabn: bool = False,
                progress: bool = True) -> tuple[list[dict], list[DataProblem]]:
    """One row per (shift, level) with AUC and its 95 % CI; the first row is the unshifted baseline.
    ``adabn``: re-estimate batch-norm statistics on each shifted set's images before predicting it."""
    grays, ys, problems = [], [], []
    for s in samples:
        try:
            grays.append(to_gray(read_image(s.path)))
            ys.append(int(s.label == "malignant"))
        except ImageReadError as exc:
            problems.append(DataProblem(str(s.path), str(exc)))
    y = np.array(ys)
    names = shifts or list(SHIFTS)
    jobs = [("none", 0)] + [(n, lv) for n in names for lv in levels]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc="shift suite", unit="shift")
    rows = []
    for name, level in jobs:
        imgs = [g if name == "none" else apply_shift(g, name, level, seed * 1_000_003 + i) for i, g in enumerate(grays)]
        arr = np.stack([predictor.preprocessor(np.repeat(g[..., None], 3, axis=2)) for g in imgs])
        model = predictor.adapted(arr) if adabn else predictor
        p = model.predict_arrays(arr)[:, predictor.malignant_index]
        lo, hi = bootstrap_ci(y, p, 0.5, n_boot, seed)["auc"] if n_boot else (float("nan"),) * 2
        rows.append({"shift": name, "level": level, "auc": _auc(y, p), "auc_low": lo, "auc_high": hi,
                     "accuracy": float(((p >= predictor.thresholds["default"]).astype(int) == y).mean())})
    base = rows[0]["auc"]
    for r in rows:
        r["auc_drop"] = base - r["auc"]
    return rows, problems


def overlay_analysis(predictor: Predictor, samples: list[Sample], p_mal: np.ndarray | None = None) -> dict:
    """Overlay counts per class, and AUC on images with and without overlays."""
    flags, ys, keep = [], [], []
    for i, s in enumerate(samples):
        try:
            ov = detect_overlays(read_image(s.path))
        except ImageReadError:
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
    return {"baseline_auc": rows[0]["auc"], "worst_auc": worst["auc"], "worst_shift": f"{worst['shift']}@{worst['level']}",
            "worst_moderate_auc": worst_mod["auc"], "worst_moderate_shift": worst_mod["shift"],
            "max_moderate_drop": max((r["auc_drop"] for r in moderate), default=float("nan"))}


def write_outputs(out_dir: Path, rows: list[dict], overlays: dict | None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "robustness.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
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
    lines = ["| shift | mild | moderate | strong |", "|---|---|---|---|",
             f"| none | {rows[0]['auc']:.3f} [{rows[0]['auc_low']:.3f}, {rows[0]['auc_high']:.3f}] | | |"]
    for n in names:
        cells = [next((f"{r['auc']:.3f} ({-r['auc_drop']:+.3f})" for r in rows if r["shift"] == n and r["level"] == lv), "")
                 for lv in LEVELS]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    md = ["# Shift suite: validation AUC under acquisition shifts", "",
          "AUC (change from the unshifted baseline). " + json.dumps(summary), "", *lines, ""]
    if overlays:
        md += ["## Overlays (calipers, text, colour)", "", "```", json.dumps(overlays, indent=1), "```"]
    (out_dir / "robustness.md").write_text("\n".join(md) + "\n")
    (out_dir / "robustness.json").write_text(json.dumps({"summary": summary, "rows": rows, "overlays": overlays}, indent=1))
    return summary
