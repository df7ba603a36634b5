"""Classify files: images, DICOM (single or multi-frame) and video, with any :class:`~rcdnet.predict.base.Predictor`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rcdnet.data.boxes import Box, BoxError, box_of_mask
from rcdnet.data.content import with_content
from rcdnet.data.decode import (
    Frame,
    ImageReadError,
    IncompleteVideo,
    kind_of,
    read_frames,
    read_mask,
)
from rcdnet.data.named import masks_beside
from rcdnet.data.samples import DataProblem
from rcdnet.predict.base import Predictor, prediction_row
from rcdnet.runtime import parallel_map, with_progress


def smooth(p: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` frames (shorter at the clip's ends)."""
    if window <= 1 or len(p) < 2:
        return p.copy()
    k = np.ones(window)
    return np.convolve(p, k, "same") / np.convolve(np.ones_like(p), k, "same")


def _box(predictor: Predictor, path: Path, box: Box | None, rgb: np.ndarray, localiser=None) -> Box | None:
    """The lesion box a region-of-interest model classifies: the one given, else the one ``localiser`` finds in
    ``rgb`` (the automatic mode), else the box around a lesion mask beside the file (``<stem>_mask*.png``); None
    for a whole-image model."""
    if predictor.preprocessor.roi_margin <= 0:
        return None
    if box is not None:
        return box
    if localiser is not None:
        return localiser.box(rgb)
    if masks := masks_beside(path):
        return box_of_mask(read_mask(masks, rgb.shape[:2]))
    return None


def _stream_probabilities(predictor: Predictor, path: Path, chunk: int, problems: list[DataProblem],
                          box: Box | None = None, localiser=None):
    """A video, decoded and classified ``chunk`` frames at a time (a clip never sits whole in memory):
    (probabilities (F, C) or None when unreadable, frames read). A clip that ended early keeps its frames and is
    also listed in ``problems``."""
    probs, meta, rgbs = [], [], []

    def prep(rgb: np.ndarray) -> np.ndarray:
        return predictor.preprocessor(rgb, _box(predictor, path, box, rgb, localiser))

    def classify() -> None:  # the decoded frames, preprocessed on the worker threads (boxes found there too)
        probs.append(predictor.predict_arrays(np.stack(list(parallel_map(prep, rgbs)))))
        rgbs.clear()

    try:
        try:
            for fr in with_content(read_frames(path), path):
                rgbs.append(fr.rgb)
                meta.append(Frame(np.empty(0, np.uint8), fr.index, fr.time))
                if len(rgbs) == chunk:
                    classify()
        except IncompleteVideo as exc:  # keep the frames decoded before the clip broke off
            problems.append(DataProblem(str(path), str(exc).removeprefix(f"{path}: ")))
        if rgbs:
            classify()
    except (ImageReadError, BoxError) as exc:
        problems.append(DataProblem(str(path), str(exc).removeprefix(f"{path}: ")))
        return None, meta
    return (np.concatenate(probs) if probs else None), meta


def _decoded(predictor: Predictor, path: Path, box: Box | None = None, localiser=None
             ) -> tuple[np.ndarray, list[Frame]] | DataProblem | None:
    """Runs on a worker thread: a still image or DICOM file decoded and preprocessed, (F, S, S) uint8 with each
    frame's index and time; a :class:`DataProblem` if it cannot be read; None for a video (streamed instead)."""
    if kind_of(path) == "video":
        return None
    try:
        frames = [(predictor.preprocessor(fr.rgb, _box(predictor, path, box, fr.rgb, localiser)),
                   Frame(np.empty(0, np.uint8), fr.index, fr.time)) for fr in with_content(read_frames(path), path)]
    except (ImageReadError, BoxError) as exc:
        return DataProblem(str(path), str(exc).removeprefix(f"{path}: "))
    return np.stack([a for a, _ in frames]), [m for _, m in frames]


def _add_rows(predictor: Predictor, path: Path, pr: np.ndarray, meta: list[Frame], window: int, rows: list[dict],
              frame_rows: dict[str, list[dict]]) -> None:
    """The file's row (a clip: from its frames' mean probability) and, for a clip, its per-frame rows."""
    if len(pr) == 1 and meta[0].time is None:
        rows.append(prediction_row(predictor, str(path), pr[0]))
        return
    p_mal = pr[:, predictor.malignant_index]
    frame_rows[str(path)] = [{"frame": fr.index, "time_s": "" if fr.time is None else round(fr.time, 3),
                              "p_malignant": round(float(p), 4), "p_malignant_smoothed": round(float(q), 4)}
                             for fr, p, q in zip(meta, p_mal, smooth(p_mal, window))]
    rows.append(prediction_row(predictor, str(path), pr.mean(axis=0), frames=len(pr)))


def predict_sources(predictor: Predictor, paths: list[Path], window: int = 5, chunk: int = 32, progress: bool = False,
                    box: Box | None = None, localiser=None
                    ) -> tuple[list[dict], dict[str, list[dict]], list[DataProblem]]:
    """Returns one row per file (for a multi-frame DICOM or a video: the clip's result from the mean per-frame
    probability), per-frame rows for every multi-frame file (with the probability smoothed over ``window``
    frames), and the files that could not be read, which are skipped. A clip that ended early (a truncated video)
    is predicted from the frames that were decoded and is also listed among the problems, with what happened.

    Images and DICOM files are decoded and preprocessed ``chunk`` files at a time on the policy's worker threads
    (:mod:`rcdnet.runtime`), then classified; a video is decoded and classified as it streams. A region-of-interest
    model classifies the square around ``box``, else around the lesion ``localiser``
    (:class:`~rcdnet.predict.localise.Localiser`) finds in each frame, else around the lesion mask beside each file;
    a file without one is a problem that names it."""
    rows, frame_rows, problems = [], {}, []
    bar = with_progress(range(len(paths)), len(paths), "predict", progress, unit="file")
    ticks = iter(bar)
    for start in range(0, len(paths), chunk):
        part = [Path(p) for p in paths[start:start + chunk]]
        # decode and preprocess a chunk on the worker threads, then classify it: the two phases take turns, as
        # torch's threads and the workers running side by side on the same cores slow each other down
        for path, item in zip(part, list(parallel_map(lambda p: _decoded(predictor, p, box, localiser), part))):
            next(ticks, None)
            if isinstance(item, DataProblem):
                problems.append(item)
                continue
            pr, meta = (_stream_probabilities(predictor, path, chunk, problems, box, localiser) if item is None
                        else (predictor.predict_arrays(item[0]), item[1]))
            if pr is not None:
                _add_rows(predictor, path, pr, meta, window, rows, frame_rows)
    if hasattr(bar, "close"):
        bar.close()
    return rows, frame_rows, problems


def frames_csv_names(paths: list[str]) -> dict[str, str]:
    """The per-frame CSV's file name for each clip: ``<name>.frames.csv``; clips that share a file name get their
    two innermost folders' names in front (``a_b_clip.mp4.frames.csv``), and a number where even those agree, so
    that no clip's frames overwrite another's."""
    names = [Path(p).name for p in paths]
    out = {p: f"{n}.frames.csv" if names.count(n) == 1 else
           "_".join([x for x in Path(p).resolve().parent.parts[1:] if x][-2:] + [n]) + ".frames.csv"
           for p, n in zip(paths, names)}
    seen: dict[str, int] = {}
    for p, n in out.items():
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            out[p] = n.replace(".frames.csv", f"_{seen[n]}.frames.csv")
    return out
