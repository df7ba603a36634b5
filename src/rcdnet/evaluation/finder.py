"""How well the finder does on a labelled set (a run's validation split, a held-out hospital): lesion found, box
IoU >= 0.5, Dice, longest-diameter error in mm where the pixel size is known, "no lesion" on normal images, and
the classifier's AUC on the found boxes beside its AUC on the boxes of the drawn masks (paired cluster bootstrap).

The found rate on the split whose lesion images chose the threshold is in-sample by construction (about
``segment.target_sensitivity``); every other number is not tuned on the images it is measured on."""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.metrics import roc_auc_score

from rcdnet.data.decode import ImageReadError, read_image, read_mask
from rcdnet.data.samples import Sample
from rcdnet.data.boxes import box_iou
from rcdnet.evaluation.selection import bootstrap_differences
from rcdnet.runtime import parallel_map
from rcdnet.segment.finder import LesionFinder
from rcdnet.segment.lesions import measure


CHUNK = 32  # images decoded, segmented (one batch) and classified together


@dataclasses.dataclass(frozen=True)
class ImageScore:
    """How the finder did on one image: ``found`` (a lesion reached the threshold); on a lesion image also the best
    guess's box IoU and the found outline's Dice against the mask, the longest diameter's error in mm (where the pixel
    size is known) and, with a region-of-interest classifier, p(malignant) on the found box and on the mask's box.
    A normal image has only ``found``."""

    sample: Sample
    found: bool
    box_iou: float | None = None
    dice: float | None = None
    diameter_error_mm: float | None = None
    p_found_box: float | None = None
    p_given_box: float | None = None

    @property
    def lesion(self) -> bool:
        return bool(self.sample.mask_paths)


def _decoded(s: Sample):
    try:
        rgb = read_image(s.path)
        return s, rgb, read_mask(s.mask_paths, rgb.shape[:2]) if s.mask_paths else None
    except ImageReadError:
        return None


def _score_chunk(finder: LesionFinder, predictor, chunk: list[Sample]) -> list[ImageScore]:
    """An :class:`ImageScore` per readable image. The finder's maps are one batch, the classifier's squares
    (preprocessed on the worker threads) another."""
    items = [x for x in parallel_map(_decoded, chunk) if x is not None]
    if not items:
        return []
    maps = finder.maps(np.stack([finder.grey(rgb) for _, rgb, _ in items]))
    rows, crops = [], []
    for (s, rgb, truth), small in zip(items, maps):
        pixel_mm = s.extra.get("pixel_size_mm")
        f = finder.finding(finder.on_original(small, rgb.shape[:2]), pixel_mm)
        if truth is None:  # a normal image
            rows.append(ImageScore(s, f.found))
            continue
        true_lesion = measure(truth, 1.0, pixel_mm)
        found = np.zeros_like(truth)
        for les in f.lesions:
            found |= les.mask(truth.shape)
        dice = float(2 * (found & truth).sum() / max(found.sum() + truth.sum(), 1))
        iou = box_iou(f.best.box, true_lesion.box) if f.best is not None else 0.0
        err = abs(f.best.long_diameter - true_lesion.long_diameter) if f.best is not None and pixel_mm else None
        rows.append(ImageScore(s, f.found, iou, dice, err))
        guess = f.best.box if f.best is not None else (0, 0, rgb.shape[1], rgb.shape[0])
        crops += [(rgb, guess, len(rows) - 1), (rgb, true_lesion.box, len(rows) - 1)]
    if predictor is not None and predictor.preprocessor.roi and crops:
        arrays = np.stack(list(parallel_map(lambda c: predictor.preprocessor(c[0], c[1]), crops)))
        p = predictor.predict_arrays(arrays)[:, predictor.malignant_index]
        for k in range(0, len(crops), 2):
            i = crops[k][2]
            rows[i] = dataclasses.replace(rows[i], p_found_box=float(p[k]), p_given_box=float(p[k + 1]))
    return rows


def found_boxes(finder: LesionFinder, samples: list[Sample]) -> tuple[list[Sample], list]:
    """Every sample with the box of the most confident lesion the finder finds (replacing any box it had); a sample
    where none reaches the threshold is a problem ("no lesion found"), as it would be in predict."""
    from rcdnet.data.samples import DataProblem

    def one(s: Sample):
        try:
            f = finder.find(read_image(s.path), s.extra.get("pixel_size_mm"))
        except ImageReadError as exc:
            return DataProblem(str(s.path), str(exc).removeprefix(f"{s.path}: "))
        return dataclasses.replace(s, box=f.lesions[0].box) if f.found else DataProblem(str(s.path), f.refusal())

    located, problems = [], []
    for item in parallel_map(one, samples):
        (problems if isinstance(item, DataProblem) else located).append(item)
    return located, problems


def automatic_mode(predictor, model: str, given: str | bool, samples: list[Sample], n_boot: int
                   ) -> tuple[list[Sample], list, dict]:
    """``evaluate --found-boxes``: the finder's boxes replace the masks' (the automatic mode). Returns the samples
    with a found lesion, the refused ones (problems), and how the finder did on these images against their masks."""
    from rcdnet.segment.finder import finder_for

    finder = finder_for(predictor, model, given if isinstance(given, str) else None)
    if finder is None:
        raise ValueError(f"--found-boxes: {model} ships no lesion finder (train with segment.epochs > 0, or pass "
                         "--found-boxes PATH to a run directory or segmenter.pt)")
    agreement = evaluate_finder(finder, samples, predictor, n_boot=n_boot)
    located, refused = found_boxes(finder, samples)
    print(f"automatic mode: boxes from {finder.source}: lesion found in {len(located)} of {len(samples)} images; "
          f"against the masks: box IoU >= 0.5 in {agreement.get('box_iou_0.5', float('nan')):.3f}, Dice "
          f"{agreement.get('dice', float('nan')):.3f}")
    return located, refused, {"lesion_finder": agreement}


def boxes_where_missing(predictor, model: str, samples: list[Sample]) -> tuple[list[Sample], list]:
    """A region-of-interest model's samples with neither a box nor a mask get the box of the lesion the run's
    finder finds (said on the screen, with how many); where none is found, or the run ships no finder, they are
    left for the preprocessing to refuse by name."""
    from rcdnet.segment.finder import finder_for

    missing = [s for s in samples if s.box is None and not s.mask_paths]
    if not missing or not predictor.preprocessor.roi or (finder := finder_for(predictor, model)) is None:
        return samples, []
    located, refused = found_boxes(finder, missing)
    print(f"{len(missing)} images had no box and no mask: the lesion finder found one in {len(located)}"
          + (f" ({len(refused)} refused: no lesion found)" if refused else ""))
    keep = {id(s) for s in missing}
    return [s for s in samples if id(s) not in keep] + located, refused


def finder_rows(finder: LesionFinder, samples: list[Sample], predictor=None) -> list[ImageScore]:
    """An :class:`ImageScore` per readable sample (unreadable ones are left out)."""
    return [row for i in range(0, len(samples), CHUNK) for row in _score_chunk(finder, predictor, samples[i:i + CHUNK])]


def per_image_table(rows: list[ImageScore]) -> list[dict]:
    """:func:`finder_rows` as CSV rows (``<source>_finder.csv``): a normal image has only ``found``."""
    names = ("box_iou", "dice", "diameter_error_mm", "p_found_box", "p_given_box")
    return [{"key": r.sample.key, "group": r.sample.group or r.sample.key,
             "label": r.sample.label if r.lesion else "normal", "found": int(r.found),
             **{n: "" if getattr(r, n) is None else round(getattr(r, n), 5) for n in names}} for r in rows]


def evaluate_finder(finder: LesionFinder, samples: list[Sample], predictor=None, n_boot: int = 2000,
                    rows: list[ImageScore] | None = None) -> dict:
    """The finder's numbers on ``samples`` (lesion images with masks, and normal ones), with the classifier
    ``predictor``'s found-box and given-box AUC where it is a region-of-interest model (``rows``: their
    :func:`finder_rows`, when already computed)."""
    rows = finder_rows(finder, samples, predictor) if rows is None else rows
    lesion = [r for r in rows if r.lesion]
    normal = [r for r in rows if not r.lesion]
    out = {"threshold": round(finder.threshold, 4), "lesion_images": len(lesion), "normal_images": len(normal)}
    if lesion:
        out |= {"found": _mean([r.found for r in lesion]), "box_iou_0.5": _mean([r.box_iou >= 0.5 for r in lesion]),
                "mean_box_iou": _mean([r.box_iou for r in lesion]), "dice": _mean([r.dice for r in lesion])}
        errs = [r.diameter_error_mm for r in lesion if r.diameter_error_mm is not None]
        if errs:
            out |= {"diameter_error_mm_median": round(float(np.median(errs)), 2), "with_pixel_size": len(errs)}
    if normal:
        out["no_lesion_on_normal"] = _mean([not r.found for r in normal])
    if lesion and lesion[0].p_found_box is not None:
        out |= _paired_auc(lesion, predictor, n_boot)
    return out


def _mean(v) -> float:
    return round(float(np.mean(v)), 4)


def _paired_auc(rows: list[ImageScore], predictor, n_boot: int) -> dict:
    """AUC of the found boxes (the best guess where none reached the threshold) and of the masks' boxes on the same
    lesion images, and their difference with a 95 % interval resampling patients / duplicate groups."""
    y = np.array([r.sample.label == predictor.classes[predictor.malignant_index] for r in rows], int)
    if len(set(y)) < 2:
        return {}
    found, given = np.array([r.p_found_box for r in rows]), np.array([r.p_given_box for r in rows])
    clusters = np.array([r.sample.group or r.sample.key for r in rows])
    diffs = bootstrap_differences([(y, clusters, found[None], given[None])], n_boot)
    return {"auc_found_box": round(float(roc_auc_score(y, found)), 4),
            "auc_given_box": round(float(roc_auc_score(y, given)), 4),
            "auc_difference_ci": [round(float(np.percentile(diffs, q)), 4) for q in (2.5, 97.5)]}


def markdown(v: dict, title: str | None = "Lesion finder (validation split)", chose_threshold: bool = True
             ) -> list[str]:
    """The finder's numbers ``v`` (:func:`evaluate_finder`, with its history where it has one) as Markdown: under a
    ``title`` heading if given; ``chose_threshold``: these images chose its threshold (the found rate is in-sample)."""
    lines = [f"## {title}", ""] if title else []
    found = f"{v['found']:.1%}" if "found" in v else "–"
    lines += [f"A U-Net (EfficientNet-Lite0 encoder) outlines lesions on the whole image; a region is a found lesion "
              f"when its mean probability reaches {v['threshold']:.3f}, " +
              (f"the threshold at which it keeps {found} of these lesion images (in-sample: chosen on them)."
               if chose_threshold else f"chosen on the training hospitals' validation split; here it finds a lesion "
                                       f"in {found} of the lesion images."), ""]
    if "history" in v:
        h = v["history"]
        lines.append(f"- trained {len(h)} epochs in {sum(e['seconds'] for e in h) / 60:.1f} min; validation Dice by "
                     "epoch " + ", ".join(f"{e['val_dice']:.3f}" for e in h))
    if v.get("lesion_images"):
        lines.append(f"- {v['lesion_images']} lesion images: lesion box found (IoU >= 0.5 with the mask's box) in "
                     f"{v['box_iou_0.5']:.1%}, mean box IoU {v['mean_box_iou']:.3f}, Dice {v['dice']:.3f}")
    if "diameter_error_mm_median" in v:
        lines.append(f"- longest diameter: median error {v['diameter_error_mm_median']:.1f} mm on the "
                     f"{v['with_pixel_size']} images whose pixel size is known")
    if v.get("normal_images"):
        lines.append(f"- {v['normal_images']} normal images: \"no lesion found\" on {v['no_lesion_on_normal']:.1%}")
    if "auc_found_box" in v:
        lo, hi = v["auc_difference_ci"]
        lines.append(f"- classifier AUC on the found boxes {v['auc_found_box']:.3f} vs on the masks' boxes "
                     f"{v['auc_given_box']:.3f} (difference 95 % CI [{lo:+.3f}, {hi:+.3f}], patients resampled; "
                     "the best guess is classified where no region reached the threshold)")
    return lines
