"""Classify files: images, DICOM (single or multi-frame) and video, with any :class:`~rcdnet.predict.base.Predictor`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rcdnet.data.decode import (
    Frame,
    ImageReadError,
    IncompleteVideo,
    kind_of,
    read_frames,
)
from rcdnet.data.samples import DataProblem
from rcdnet.predict.base import Predictor, prediction_row
from rcdnet.runtime import parallel_map, with_progress


def smooth(p: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` frames (shorter at the clip's ends)."""
    if window <= 1 or len(p) < 2:
        return p.copy()
    k = np.ones(window)
    return np.convolve(p, k, "same") / np.convolve(np.ones_like(p), k, "same")


def _stream_probabilities(predictor: Predictor, path: Path, chunk: int, problems: list[DataProblem]):
    """A video, decoded and classified ``chunk`` frames at a time (a clip never sits whole in memory):
    (probabilities (F, C) or None when unreadable, frames read). A clip that ended early keeps its frames and is
    also listed in ``problems``."""
    probs, meta, batch = [], [], []
    try:
        for fr in read_frames(path):
            batch.append(predictor.preprocessor(fr.rgb))
            meta.append(Frame(np.empty(0, np.uint8), fr.index, fr.time))
            if len(batch) == chunk:
                probs.append(predictor.predict_arrays(np.stack(batch)))
                batch = []
    except ImageReadError as exc:
        problems.append(DataProblem(str(path), str(exc).removeprefix(f"{path}: ")))
        if not isinstance(exc, IncompleteVideo):
            return None, meta
    if batch:
        probs.append(predictor.predict_arrays(np.stack(batch)))
    return np.concatenate(probs), meta


def _decoded(predictor: Predictor, path: Path) -> tuple[np.ndarray, list[Frame]] | DataProblem | None:
    """Runs on a worker thread: a still image or DICOM file decoded and preprocessed, (F, S, S) uint8 with each
    frame's index and time; a :class:`DataProblem` if it cannot be read; None for a video (streamed instead)."""
    if kind_of(path) == "video":
        return None
    try:
        frames = [(predictor.preprocessor(fr.rgb), Frame(np.empty(0, np.uint8), fr.index, fr.time))
                  for fr in read_frames(path)]
    except ImageReadError as exc:
        return DataProblem(str(path), str(exc).removeprefix(f"{path}: "))
    return np.stack([a for a, _ in frames]), [m for _, m in frames]


def predict_sources(predictor: Predictor, paths: list[Path], window: int = 5, chunk: int = 32, progress: bool = False
                    ) -> tuple[list[dict], dict[str, list[dict]], list[DataProblem]]:
    """Returns one row per file (for a multi-frame DICOM or a video: the clip's result from the mean per-frame
    probability), per-frame rows for every multi-frame file (with the probability smoothed over ``window``
    frames), and the files that could not be read, which are skipped. A clip that ended early (a truncated video)
    is predicted from the frames that were decoded and is also listed among the problems, with what happened.

    Images and DICOM files are decoded and preprocessed on the policy's worker threads (:mod:`rcdnet.runtime`)
    while the network classifies the files before them."""
    rows, frame_rows, problems = [], {}, []
    decoded = parallel_map(lambda p: _decoded(predictor, Path(p)), paths)
    for path, item in zip(paths, with_progress(decoded, len(paths), "predict", progress, unit="file")):
        if isinstance(item, DataProblem):
            problems.append(item)
            continue
        if item is None:
            pr, meta = _stream_probabilities(predictor, path, chunk, problems)
        else:
            pr, meta = predictor.predict_arrays(item[0]), item[1]
        if pr is None:
            continue
        if len(pr) == 1 and meta[0].time is None:
            rows.append(prediction_row(predictor, str(path), pr[0]))
            continue
        p_mal = pr[:, predictor.malignant_index]
        frame_rows[str(path)] = [{"frame": fr.index, "time_s": "" if fr.time is None else round(fr.time, 3),
                                  "p_malignant": round(float(p), 4), "p_malignant_smoothed": round(float(q), 4)}
                                 for fr, p, q in zip(meta, p_mal, smooth(p_mal, window))]
        rows.append(prediction_row(predictor, str(path), pr.mean(axis=0), frames=len(pr)))
    return rows, frame_rows, problems
