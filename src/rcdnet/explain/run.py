"""What ``rcdnet explain`` does: heat-map pictures per image, the agreement table against lesion masks, and
the Figure-4 grid. Images are read and preprocessed exactly as for prediction; maps are drawn on the original."""

from __future__ import annotations

import contextlib
import csv
import json
import re
import time
from pathlib import Path

import numpy as np

from rcdnet.data.prepare import stratified_limit
from rcdnet.data.preprocess import preprocess_samples
from rcdnet.data.samples import DataProblem, ImageReadError, Sample, read_mask
from rcdnet.data.sources import read_frames
from rcdnet.explain.agreement import centre_prior, energy_in_mask, pointing_game, road_scores, top_k_iou
from rcdnet.explain.cam import METHODS, HeatMapper, to_original
from rcdnet.explain.render import grid_figure, panel, save_png
from rcdnet.inference import Predictor

CHUNK = 16  # images read, preprocessed and explained together


def mapper(predictor: Predictor, method: str = "gradcam", layer: str | None = None,
           target: str = "malignant") -> HeatMapper:
    return HeatMapper(predictor.model, predictor.classes, predictor.to_tensor, method, layer, target)


def _load(sample: Sample, predictor: Predictor) -> dict:
    """Read one sample (an image, or the first frame of a DICOM or clip): original RGB, preprocessed array, and
    its lesion mask (or None). Raises ImageReadError."""
    rgb = next(read_frames(sample.path, max_frames=1)).rgb
    mask = read_mask(sample.mask_paths, rgb.shape[:2]) if sample.mask_paths else None
    if mask is not None and not mask.any():
        mask = None
    return {"sample": sample, "rgb": rgb, "pre": predictor.preprocessor(rgb), "mask": mask}


def _problem(sample: Sample, exc: Exception) -> DataProblem:
    """The image's path, and the message without it (a mask's message keeps the mask's own path)."""
    return DataProblem(str(sample.path), str(exc).removeprefix(f"{sample.path}: "))


def loaded_chunks(predictor: Predictor, samples: list[Sample], problems: list[DataProblem]):
    """Yield lists of up to CHUNK loaded samples (see :func:`_load`); unreadable files (or masks) are appended to
    ``problems`` and skipped."""
    for i in range(0, len(samples), CHUNK):
        items = []
        for s in samples[i:i + CHUNK]:
            try:
                items.append(_load(s, predictor))
            except ImageReadError as exc:
                problems.append(_problem(s, exc))
        if items:
            yield items


def iter_explained(predictor: Predictor, hm: HeatMapper, samples: list[Sample], problems: list[DataProblem]):
    """Yield one dict per readable sample: ``rgb``, ``heat`` (H, W) on the original, ``mask``, ``p_malignant``,
    ``predicted``. Unreadable files (or masks) are appended to ``problems`` and skipped."""
    for items in loaded_chunks(predictor, samples, problems):
        pre = np.stack([it["pre"] for it in items])
        probs = predictor.predict_arrays(pre)
        heats = hm(pre)
        for it, pr, heat in zip(items, probs, heats):
            it["heat"] = to_original(heat, it["rgb"].shape[:2], predictor.preprocessor)
            it["p_malignant"] = float(pr[predictor.malignant_index])
            it["predicted"] = predictor.classes[int(np.argmax(pr))]
            yield it


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "image"


def caption(it: dict, method: str, layer: str) -> list[str]:
    s = it["sample"]
    truth = f"  true: {s.label}" if s.label in ("benign", "malignant", "normal") else ""
    return [f"{Path(s.path).name}: {it['predicted']}  p(malignant)={it['p_malignant']:.3f}{truth}",
            f"{method} on {layer}" + ("  green: lesion mask" if it["mask"] is not None else "  (no mask)")]


def explain_samples(predictor: Predictor, samples: list[Sample], out_dir: Path, method: str = "gradcam",
                    layer: str | None = None, target: str = "malignant") -> tuple[list[dict], list[DataProblem]]:
    """Write ``<name>.png`` (original | heat-map overlay, caption) per sample into ``out_dir``; return one row
    per image (prediction and, with a mask, the agreement scores) and the files that were skipped."""
    out_dir = Path(out_dir)
    rows, problems, used = [], [], set()
    with mapper(predictor, method, layer, target) as hm:
        for it in iter_explained(predictor, hm, samples, problems):
            s = it["sample"]
            name = _safe(s.key if s.source != "file" else Path(s.path).stem)
            while name in used:
                name += "_"
            used.add(name)
            png = out_dir / f"{name}.png"
            save_png(png, panel(it["rgb"], it["heat"], it["mask"], caption(it, method, hm.layer)))
            row = {"image": str(s.path), "predicted": it["predicted"], "p_malignant": round(it["p_malignant"], 4),
                   "heat_map": str(png), "energy_in_mask": "", "pointing_hit": "", "iou_top10": ""}
            if it["mask"] is not None:  # agreement with the lesion mask; blank without one
                row.update(_agreement(it["heat"], it["mask"]))
            rows.append(row)
    return rows, problems


def _agreement(heat: np.ndarray, mask: np.ndarray) -> dict:
    return {"energy_in_mask": round(energy_in_mask(heat, mask), 4), "pointing_hit": int(pointing_game(heat, mask)),
            "iou_top10": round(top_k_iou(heat, mask, 10), 4)}


def _mean_ci(v: list[float], n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    a = np.asarray(v, float)
    if len(a) == 0:
        return float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    means = a[idx].mean(axis=1)
    return float(a.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def agreement_table(predictor: Predictor, datasets: dict[str, list[Sample]], methods: list[str],
                    layer: str | None = None, target: str = "malignant", road_images: int = 40,
                    limit: int | None = None, progress: bool = False) -> tuple[list[dict], list[DataProblem]]:
    """One row per (dataset, method) plus a centre-prior reference row per dataset, over the images that have a
    lesion mask: mean energy in mask (95% CI), pointing-game hit rate, IoU of the top 10%, the same energy on
    malignant images only, ROAD probability change (MoRF / LeRF, 20% of pixels, on ``road_images``
    masked images, a stratified seeded subset) and heat maps per second. ``limit``: only a stratified, seeded subset
    of that many masked images per dataset."""
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown heat-map method {m!r}; choose from {', '.join(METHODS)}")
    rows, problems = [], []
    target_index = predictor.classes.index(target) if target != "predicted" else None
    for name, samples in datasets.items():
        samples = [s for s in samples if s.mask_paths]
        if limit:
            samples = stratified_limit(samples, limit, seed=0)
        road_keys = {s.key for s in stratified_limit(samples, road_images, seed=0)} if road_images > 0 else set()
        for method in methods + ["centre-prior"]:
            per, road_m, road_l, seconds = [], [], [], 0.0
            hm = None if method == "centre-prior" else mapper(predictor, method, layer, target)
            with hm or contextlib.nullcontext():
                seen = problems if method == methods[0] else []  # report unreadable files once
                for items in loaded_chunks(predictor, samples, seen):
                    items = [it for it in items if it["mask"] is not None]
                    if not items:
                        continue
                    pre = np.stack([it["pre"] for it in items])
                    t0 = time.perf_counter()
                    heats = (np.stack([centre_prior(pre.shape[1:])] * len(pre)).astype(np.float32)
                             if method == "centre-prior" else hm(pre))
                    seconds += time.perf_counter() - t0
                    for it, heat in zip(items, heats):
                        full = to_original(heat, it["rgb"].shape[:2], predictor.preprocessor)
                        per.append({**_agreement(full, it["mask"]), "malignant": it["sample"].label == "malignant"})
                    sel = [j for j, it in enumerate(items) if it["sample"].key in road_keys]
                    if sel:
                        x = predictor.to_tensor(pre[sel])
                        classes = ([target_index] * len(x) if target_index is not None  # else: the predicted class
                                   else np.argmax(predictor.predict_arrays(pre[sel]), axis=1).tolist())
                        morf, lerf = road_scores(predictor.model, x, heats[sel], classes)
                        road_m += morf.tolist()
                        road_l += lerf.tolist()
                    if progress:
                        print(f"  {name} {method}: {len(per)}/{len(samples)}", flush=True)
            e, lo, hi = _mean_ci([r["energy_in_mask"] for r in per])
            mal = [r["energy_in_mask"] for r in per if r["malignant"]]
            rows.append({
                "dataset": name, "method": method, "layer": hm.layer if hm else "-",
                "target": target, "n": len(per), "energy_in_mask": e, "energy_ci": [lo, hi],
                "pointing_game": float(np.mean([r["pointing_hit"] for r in per])) if per else float("nan"),
                "iou_top10": float(np.mean([r["iou_top10"] for r in per])) if per else float("nan"),
                "energy_in_mask_malignant": float(np.mean(mal)) if mal else float("nan"), "n_malignant": len(mal),
                "road_morf": float(np.mean(road_m)) if road_m else float("nan"),
                "road_lerf": float(np.mean(road_l)) if road_l else float("nan"), "n_road": len(road_m),
                "road_combined": float(np.mean(np.subtract(road_l, road_m)) / 2) if road_m else float("nan"),
                "maps_per_s": len(per) / seconds if seconds > 0 else float("nan"),
            })
    return rows, problems


def write_table(rows: list[dict], out_dir: Path, header: str = "") -> str:
    """``explain_metrics.{csv,json,md}`` in ``out_dir``; returns the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "explain_metrics.json").write_text(json.dumps(rows, indent=1))
    with open(out_dir / "explain_metrics.csv", "w", newline="") as fh:
        flat = [{**{k: v for k, v in r.items() if k != "energy_ci"}, "energy_ci_low": r["energy_ci"][0],
                 "energy_ci_high": r["energy_ci"][1]} for r in rows]
        w = csv.DictWriter(fh, fieldnames=list(flat[0]))
        w.writeheader()
        w.writerows(flat)
    lines = [header] if header else []
    lines += ["| dataset | method | layer | n | energy in mask [95% CI] | pointing game | IoU top 10% | "
              "energy, malignant | ROAD MoRF Δp | ROAD LeRF Δp | ROAD (LeRF−MoRF)/2 | maps/s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['method']} | {r['layer']} | {r['n']} | {r['energy_in_mask']:.3f} "
                     f"[{r['energy_ci'][0]:.3f}, {r['energy_ci'][1]:.3f}] | {r['pointing_game']:.3f} | "
                     f"{r['iou_top10']:.3f} | {r['energy_in_mask_malignant']:.3f} | {r['road_morf']:+.3f} | "
                     f"{r['road_lerf']:+.3f} | {r['road_combined']:+.3f} | {r['maps_per_s']:.1f} |")
    md = "\n".join(lines) + "\n"
    (out_dir / "explain_metrics.md").write_text(md)
    return md


FIGURE_COLUMNS = ["benign, correct", "benign, wrong", "malignant, correct", "malignant, wrong"]


def figure4(predictor: Predictor, datasets: dict[str, list[Sample]], path: Path, method: str = "gradcam",
            layer: str | None = None, target: str = "malignant", cache_dir: Path | None = None) -> dict:
    """The paper's Figure 4, made honest: per dataset (row), the most confident correct and the most confident
    wrong benign and malignant case at the default operating point (column). Returns the chosen keys."""
    threshold = predictor.thresholds.get("default", 0.5)
    cells, chosen = {}, {}
    with mapper(predictor, method, layer, target) as hm:
        for name, samples in datasets.items():
            pre_rows = []
            kept, images, _ = preprocess_samples(samples, predictor.preprocessor, cache_dir)
            p = predictor.predict_arrays(images)[:, predictor.malignant_index]
            for s, pm in zip(kept, p):
                pred_mal = pm >= threshold
                correct = pred_mal == (s.label == "malignant")
                conf = pm if pred_mal else 1 - pm
                pre_rows.append((f"{s.label}, {'correct' if correct else 'wrong'}", conf, s))
            for col in FIGURE_COLUMNS:
                cands = [r for r in pre_rows if r[0] == col]
                if not cands:
                    continue
                s = max(cands, key=lambda r: r[1])[2]
                it = next(iter_explained(predictor, hm, [s], []))
                it["caption"] = f"{Path(s.path).name}\np(malignant)={it['p_malignant']:.2f}"
                cells[(name, col)] = it
                chosen[f"{name}: {col}"] = s.key
    grid_figure(cells, list(datasets), FIGURE_COLUMNS, path,
                f"{method} ({target}) on {hm.layer}; green: radiologist's lesion mask; threshold p>={threshold:.2f}")
    return chosen
