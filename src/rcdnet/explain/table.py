"""The agreement table: how well each heat-map method's maps agree with the radiologists' lesion masks, how
faithful they are to the model (ROAD), and how fast, per dataset, with the centre prior as the reference row."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rcdnet.data.prepare import stratified_limit
from rcdnet.data.samples import DataProblem, Sample
from rcdnet.explain.agreement import road_scores
from rcdnet.explain.cam import METHODS, REFERENCE
from rcdnet.explain.images import CHUNK, agreement, loaded_chunks, mapper
from rcdnet.files import markdown_table, write_csv, write_json
from rcdnet.predict.pytorch import TorchPredictor
from rcdnet.runtime import with_progress

SLOW_METHODS = {"scorecam"}  # one forward pass per feature channel: about 0.1-0.2 maps/s on 2 cores
SLOW_LIMIT = 40  # masked images per dataset a slow method is scored on unless --limit says otherwise


def _mean_ci(v: list[float], n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    a = np.asarray(v, float)
    if len(a) == 0:
        return float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    means = a[idx].mean(axis=1)
    return float(a.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _score(predictor: TorchPredictor, hm, samples: list[Sample], road_keys: set[str], target_index: int | None,
           problems: list[DataProblem], desc: str = "", progress: bool = False
           ) -> tuple[list[dict], list[float], list[float], float]:
    """One method over one dataset's masked images: per-image agreement, ROAD (MoRF, LeRF) on ``road_keys``, and the
    seconds spent making heat maps."""
    per, road_m, road_l, seconds = [], [], [], 0.0
    chunks = loaded_chunks(predictor, samples, problems)
    for items in with_progress(chunks, -(-len(samples) // CHUNK), desc, progress, unit="batch"):
        items = [it for it in items if it["mask"] is not None]
        if not items:
            continue
        pre = np.stack([it["pre"] for it in items])
        t0 = time.perf_counter()
        heats = hm(pre)
        seconds += time.perf_counter() - t0
        for it, heat in zip(items, heats):
            full = predictor.preprocessor.to_original(heat, it["rgb"].shape[:2], it["box"])
            per.append({**agreement(full, it["mask"]), "malignant": it["sample"].label == "malignant"})
        sel = [j for j, it in enumerate(items) if it["sample"].key in road_keys]
        if sel:
            x = predictor.model_input(pre[sel])
            classes = ([target_index] * len(x) if target_index is not None  # else: the predicted class
                       else np.argmax(predictor.predict_arrays(pre[sel]), axis=1).tolist())
            morf, lerf = road_scores(predictor.model, x, heats[sel], classes)
            road_m += morf.tolist()
            road_l += lerf.tolist()
    return per, road_m, road_l, seconds


def _nan_mean(v: list[float]) -> float:
    return float(np.mean(v)) if len(v) else float("nan")


def agreement_table(predictor: TorchPredictor, datasets: dict[str, list[Sample]], methods: list[str],
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
    methods = list(methods) + ([REFERENCE] if REFERENCE not in methods else [])
    rows, problems = [], []
    target_index = predictor.classes.index(target) if target != "predicted" else None
    for name, samples in datasets.items():
        samples = [s for s in samples if s.mask_paths]
        if limit:
            samples = stratified_limit(samples, limit, seed=0)
        road_keys = {s.key for s in stratified_limit(samples, road_images, seed=0)} if road_images > 0 else set()
        for method in methods:
            mine = samples
            if method in SLOW_METHODS and not limit and len(samples) > SLOW_LIMIT:
                mine = stratified_limit(samples, SLOW_LIMIT, seed=0)  # (the seeded subset --limit would give)
                print(f"  {name} {method}: a slow method, scored on a stratified subset of {SLOW_LIMIT} of the "
                      f"{len(samples)} masked images (--limit N to choose)", flush=True)
            with mapper(predictor, method, layer, target) as hm:
                seen = problems if method == methods[0] else []  # report unreadable files once
                per, road_m, road_l, seconds = _score(predictor, hm, mine, road_keys, target_index, seen,
                                                      f"{name} {method}", progress)
            if progress:
                print(f"  {name} {method}: {len(per)}/{len(mine)} masked images", flush=True)
            e, lo, hi = _mean_ci([r["energy_in_mask"] for r in per])
            mal = [r["energy_in_mask"] for r in per if r["malignant"]]
            rows.append({
                "dataset": name, "method": method, "layer": hm.layer, "target": target, "n": len(per),
                "energy_in_mask": e, "energy_ci": [lo, hi], "pointing_game": _nan_mean([r["pointing_hit"] for r in per]),
                "iou_top10": _nan_mean([r["iou_top10"] for r in per]), "energy_in_mask_malignant": _nan_mean(mal),
                "n_malignant": len(mal), "road_morf": _nan_mean(road_m), "road_lerf": _nan_mean(road_l),
                "n_road": len(road_m),
                "road_combined": float(np.mean(np.subtract(road_l, road_m)) / 2) if road_m else float("nan"),
                "maps_per_s": len(per) / seconds if seconds > 0 else float("nan"),
            })
    return rows, problems


def write_table(rows: list[dict], out_dir: Path, header: str = "") -> str:
    """``explain_metrics.{csv,json,md}`` in ``out_dir``; returns the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "explain_metrics.json", rows)
    write_csv(out_dir / "explain_metrics.csv",
              [{**{k: v for k, v in r.items() if k != "energy_ci"}, "energy_ci_low": r["energy_ci"][0],
                "energy_ci_high": r["energy_ci"][1]} for r in rows])
    cells = [[r["dataset"], r["method"], r["layer"], r["n"],
              f"{r['energy_in_mask']:.3f} [{r['energy_ci'][0]:.3f}, {r['energy_ci'][1]:.3f}]",
              f"{r['pointing_game']:.3f}", f"{r['iou_top10']:.3f}", f"{r['energy_in_mask_malignant']:.3f}",
              f"{r['road_morf']:+.3f}", f"{r['road_lerf']:+.3f}", f"{r['road_combined']:+.3f}", f"{r['maps_per_s']:.1f}"]
             for r in rows]
    lines = ([header] if header else []) + markdown_table(
        ["dataset", "method", "layer", "n", "energy in mask [95% CI]", "pointing game", "IoU top 10%",
         "energy, malignant", "ROAD MoRF Δp", "ROAD LeRF Δp", "ROAD (LeRF−MoRF)/2", "maps/s"], cells)
    md = "\n".join(lines) + "\n"
    (out_dir / "explain_metrics.md").write_text(md)
    return md
