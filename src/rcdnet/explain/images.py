"""Heat maps of individual images: read and preprocess each exactly as for prediction, explain, map the heat map
back onto the original, and write one picture per image."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from rcdnet.data.boxes import BoxError
from rcdnet.data.decode import ImageReadError, read_frames, read_mask
from rcdnet.data.preprocess import lesion_box
from rcdnet.data.samples import DataProblem, Sample
from rcdnet.explain.agreement import energy_in_mask, pointing_game, top_k_iou
from rcdnet.explain.cam import HeatMapper
from rcdnet.explain.render import panel, save_png
from rcdnet.predict.pytorch import TorchPredictor
from rcdnet.predict.regions import Region, RegionResolver
from rcdnet.runtime import parallel_map
from rcdnet.segment.finder import LesionFinder

CHUNK = 16  # images read, preprocessed and explained together


def mapper(predictor: TorchPredictor, method: str = "gradcam", layer: str | None = None,
           target: str = "malignant") -> HeatMapper:
    """A :class:`HeatMapper` on the predictor's model, fed exactly what the predictor feeds it."""
    return HeatMapper(predictor.model, predictor.classes, predictor.model_input, method, layer, target)


def _load(sample: Sample, predictor: TorchPredictor, finder: LesionFinder | None = None) -> dict:
    """Read one sample (an image, or the first frame of a DICOM or clip): original RGB, preprocessed array, its
    lesion mask (or None) and, for a region-of-interest model, the lesion box it classifies around: the sample's own
    (given, or around its mask), else the most confident lesion ``finder`` found (``region``: where the box came
    from). Raises ImageReadError, or BoxError (NoLesionFound too) for a region-of-interest model and a sample
    without a box that the finder, if any, cannot place."""
    frame = next(read_frames(sample.path, max_frames=1))
    rgb = frame.rgb
    mask = read_mask(sample.mask_paths, rgb.shape[:2]) if sample.mask_paths else None
    if mask is not None and not mask.any():
        mask = None
    box = lesion_box(sample, rgb.shape[:2]) if predictor.preprocessor.roi else None
    region = (Region(box, "given" if sample.box is not None else "mask") if box is not None else
              RegionResolver(predictor.preprocessor.roi, finder=finder, masks=False)
              .regions(Path(sample.path), rgb, frame.pixel_mm, several=False)[0])
    return {"sample": sample, "rgb": rgb, "pre": predictor.preprocessor(rgb, region.box), "mask": mask,
            "box": region.box, "region": region}


def loaded_chunks(predictor: TorchPredictor, samples: list[Sample], problems: list[DataProblem],
                  finder: LesionFinder | None = None):
    """Yield lists of up to CHUNK loaded samples (see :func:`_load`); unreadable files (or masks) are appended to
    ``problems`` and skipped. A problem names the image, and a mask's message keeps the mask's own path."""
    def load(s: Sample) -> dict | DataProblem:
        try:
            return _load(s, predictor, finder)
        except (ImageReadError, BoxError) as exc:
            return DataProblem(str(s.path), str(exc).removeprefix(f"{s.path}: "))

    for i in range(0, len(samples), CHUNK):
        items = []
        for item in parallel_map(load, samples[i:i + CHUNK]):  # decoded and preprocessed on the worker threads
            (problems if isinstance(item, DataProblem) else items).append(item)
        if items:
            yield items


def iter_explained(predictor: TorchPredictor, hm: HeatMapper, samples: list[Sample], problems: list[DataProblem],
                   finder: LesionFinder | None = None):
    """Yield one dict per readable sample: ``rgb``, ``heat`` (H, W) on the original, ``mask``, ``p_malignant``,
    ``predicted``, ``found`` (the lesion the model found, or None). Unreadable files (or masks) are appended to
    ``problems`` and skipped."""
    for items in loaded_chunks(predictor, samples, problems, finder):
        pre = np.stack([it["pre"] for it in items])
        probs = predictor.predict_arrays(pre)
        heats = hm(pre)
        lesions = predictor.localise(pre) if getattr(predictor.model, "localiser", None) is not None else None
        for j, (it, pr, heat) in enumerate(zip(items, probs, heats)):
            it["heat"] = predictor.preprocessor.to_original(heat, it["rgb"].shape[:2], it["box"])
            it["found"] = (it["region"].lesion.mask(it["rgb"].shape[:2]) if it["region"].lesion is not None else
                           None if lesions is None else
                           predictor.preprocessor.to_original(lesions[j], it["rgb"].shape[:2], it["box"]) >= 0.5)
            it["p_malignant"] = float(pr[predictor.malignant_index])
            it["predicted"] = predictor.classes[int(np.argmax(pr))]
            yield it


def agreement(heat: np.ndarray, mask: np.ndarray) -> dict:
    """Energy in the mask, pointing-game hit and top-10 % IoU of one (H, W) heat map against its lesion mask."""
    return {"energy_in_mask": round(energy_in_mask(heat, mask), 4), "pointing_hit": int(pointing_game(heat, mask)),
            "iou_top10": round(top_k_iou(heat, mask, 10), 4)}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "image"


def caption(it: dict, method: str, layer: str) -> list[str]:
    s = it["sample"]
    truth = f"  true: {s.label}" if s.label in ("benign", "malignant", "normal") else ""
    return [f"{Path(s.path).name}: {it['predicted']}  p(malignant)={it['p_malignant']:.3f}{truth}",
            f"{method} on {layer}" + ("  green: lesion mask" if it["mask"] is not None else "  (no mask)")
            + ("  white: lesion the model found" if it.get("found") is not None else "")]


def explain_samples(predictor: TorchPredictor, samples: list[Sample], out_dir: Path, method: str = "gradcam",
                    layer: str | None = None, target: str = "malignant", finder: LesionFinder | None = None
                    ) -> tuple[list[dict], list[DataProblem]]:
    """Write ``<name>.png`` (original | heat-map overlay, caption) per sample into ``out_dir``; return one row
    per image (prediction, which box was used and, with a mask, the agreement scores) and the files that were
    skipped. A region-of-interest model explains a sample without box or mask around the lesion ``finder`` found."""
    out_dir = Path(out_dir)
    rows, problems, used = [], [], set()
    with mapper(predictor, method, layer, target) as hm:
        for it in iter_explained(predictor, hm, samples, problems, finder):
            s = it["sample"]
            name = _safe(s.key if s.source != "file" else Path(s.path).stem)
            while name in used:
                name += "_"
            used.add(name)
            png = out_dir / f"{name}.png"
            save_png(png, panel(it["rgb"], it["heat"], it["mask"], caption(it, method, hm.layer), it["found"]))
            row = {"image": str(s.path), "predicted": it["predicted"], "p_malignant": round(it["p_malignant"], 4),
                   **it["region"].fields(), "heat_map": str(png), "energy_in_mask": "", "pointing_hit": "",
                   "iou_top10": "",
                   **({"found_dice": ""} if it["found"] is not None else {})}
            if it["mask"] is not None:  # agreement with the lesion mask; blank without one
                row.update(agreement(it["heat"], it["mask"]))
                if it["found"] is not None:  # and the localisation head's lesion against it
                    a, b = it["found"], it["mask"]
                    row["found_dice"] = round(float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1)), 4)
            rows.append(row)
    return rows, problems
