"""The service's answers: which region of an upload is classified, and the /predict JSON."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from fastapi import HTTPException, UploadFile

from rcdnet.data.boxes import Box, BoxError, parse_box
from rcdnet.data.content import with_content
from rcdnet.data.decode import Frame, ImageReadError, IncompleteVideo, TooManyPixels, read_frames
from rcdnet.predict import Predictor, prediction_row
from rcdnet.predict.regions import Region, RegionResolver


MAX_FRAMES = 600  # frames read from one uploaded video or multi-frame DICOM


def read_upload(file: UploadFile, limit: int, max_frames: int = MAX_FRAMES, max_pixels: int | None = None
                ) -> tuple[str, Iterator[Frame]]:
    """(file name, its frames decoded one at a time by the one decoder every command uses). An upload over
    ``limit`` bytes is a 413; problems found while decoding surface from the iterator as :class:`ImageReadError`
    (a picture over ``max_pixels``: :class:`TooManyPixels`), which :func:`decoded` turns into 4xx answers."""
    data = file.file.read(limit + 1)
    name = Path(file.filename or "upload").name
    if len(data) > limit:
        raise HTTPException(413, f"upload too large: the limit is {limit / 2**20:g} MB")
    if not data:
        raise HTTPException(400, f"{name}: empty file")
    frames = read_frames(Path(name), data=data, max_frames=max_frames, max_pixels=max_pixels)
    return name, with_content(frames, name)


def decoded(name: str, frames: Iterator[Frame], keep) -> tuple[list, str | None]:
    """``keep(frame)`` of every frame (the preprocessed frame, so a clip's full-size frames never pile up), and a
    warning when a clip ended early. A picture over the pixel limit is a 413, anything unreadable a 415."""
    out, warning = [], None
    try:
        for fr in frames:
            out.append(keep(fr))
    except IncompleteVideo as exc:
        warning = str(exc)
    except TooManyPixels as exc:
        raise HTTPException(413, str(exc)) from None
    except ImageReadError as exc:
        raise HTTPException(415, str(exc)) from None
    except BoxError as exc:
        raise HTTPException(422, f"{name}: {exc}") from None
    except ValueError as exc:
        raise HTTPException(415, f"{name}: image could not be preprocessed ({exc})") from None
    if not out:
        raise HTTPException(415, warning or f"{name}: no frames could be decoded")
    return out, warning


def prediction_json(predictor: Predictor, name: str, probs: np.ndarray) -> dict:
    """The /predict answer for (F, C) per-frame probabilities (one frame for an image)."""
    row = prediction_row(predictor, name, probs.mean(axis=0), frames=len(probs))
    return {"file": name, "label": row["label"], "p_malignant": row["p_malignant"],
            "operating_points": {op: {"threshold": t, "malignant": bool(row[f"malignant@{op}"])}
                                 for op, t in predictor.thresholds.items()},
            "frames": len(probs),
            "p_malignant_per_frame": [round(float(p), 4) for p in probs[:, predictor.malignant_index]]}


def request_box(predictor: Predictor, box: str | None) -> Box | None:
    """The form field ``box`` (x0,y0,x1,y1) parsed; refused by a whole-image model (422)."""
    if box and not predictor.preprocessor.roi:
        raise HTTPException(422, "this model classifies whole images: leave out the box")
    try:
        return parse_box(box, "box") if box else None
    except BoxError as exc:
        raise HTTPException(422, str(exc)) from None


def classified(predictor: Predictor, resolver: RegionResolver, name: str, frames: Iterator[Frame]
               ) -> tuple[list[np.ndarray], list[list[Region]], str | None]:
    """Each frame's regions (given box, or every lesion the finder finds; never a mask file on the server) and
    their preprocessed squares; the caller classifies them."""
    def keep(fr: Frame):
        regions = resolver.regions(Path(name), fr.rgb, fr.pixel_mm)
        return [predictor.preprocessor(fr.rgb, r.box) for r in regions], regions

    items, warning = decoded(name, frames, keep)
    if len(items) > 1:  # a clip: the most confident lesion of each frame
        items = [(a[:1], r[:1]) for a, r in items]
    return [a for a, _ in items], [r for _, r in items], warning


def predict_answer(predictor: Predictor, resolver: RegionResolver, name: str, frames: Iterator[Frame],
                   lock: threading.Lock) -> dict:
    """The /predict answer: a still image's most confident lesion (every lesion under ``lesions``), or a clip's
    mean over frames."""
    arrays, regions, warning = classified(predictor, resolver, name, frames)
    with lock:
        probs = predictor.predict_arrays(np.concatenate([np.stack(a) for a in arrays]))
    per_frame = probs if len(arrays) > 1 else probs[:1]
    return {**prediction_json(predictor, name, per_frame),
            "lesions": lesions_json(predictor, regions[0], probs[:len(regions[0])]), "warning": warning}


def lesions_json(predictor: Predictor, regions: list[Region], probs: np.ndarray) -> list[dict]:
    """Every region of a still image with its own p(malignant), and, where found, its outline and measurements."""
    out = []
    for region, p in zip(regions, probs[:, predictor.malignant_index]):
        item = region.fields() | {"p_malignant": round(float(p), 4)}
        if region.lesion is not None:
            item["outline"] = [list(pt) for pt in region.lesion.outline]
            item["long_axis"] = [list(pt) for pt in region.lesion.long_axis]
            item["short_axis"] = [list(pt) for pt in region.lesion.short_axis]
        out.append(item)
    return out
