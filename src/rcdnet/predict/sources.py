"""Classify files: images, DICOM (single or multi-frame) and video, with any :class:`~rcdnet.predict.base.Predictor`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rcdnet.data.boxes import Box, BoxError
from rcdnet.data.content import with_content
from rcdnet.data.decode import Frame, ImageReadError, IncompleteVideo, kind_of, read_frames
from rcdnet.data.samples import DataProblem
from rcdnet.predict.base import Predictor, prediction_row
from rcdnet.predict.regions import Region, RegionResolver
from rcdnet.segment.finder import LesionFinder, NoLesionFound
from rcdnet.runtime import parallel_map, with_progress


def smooth(p: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` frames (shorter at the clip's ends)."""
    if window <= 1 or len(p) < 2:
        return p.copy()
    k = np.ones(window)
    return np.convolve(p, k, "same") / np.convolve(np.ones_like(p), k, "same")


def _without_lesion(path: Path, skipped: int, frames: int) -> DataProblem:
    """A multi-frame file in which the finder found no lesion in ``skipped`` of its ``frames`` frames."""
    if skipped == frames:
        return DataProblem(str(path), f"no lesion found in any of its {frames} frames: draw a box (--box x0,y0,x1,y1)")
    return DataProblem(str(path), f"no lesion found in {skipped} of its {frames} frames: its answer comes from the "
                                  f"other {frames - skipped}")


def _stream_probabilities(predictor: Predictor, path: Path, chunk: int, problems: list[DataProblem],
                          resolver: RegionResolver):
    """A video, decoded and classified ``chunk`` frames at a time (a clip never sits whole in memory):
    (probabilities (F, C) or None when unreadable, the F frames classified, each one's region). Frames in which the
    finder finds no lesion are left out (and counted in ``problems``); so is a clip that ended early, which keeps the
    frames decoded before it broke off."""
    probs, meta, rgbs, regions, kept = [], [], [], [], []

    def prep(rgb: np.ndarray) -> tuple[np.ndarray | None, Region | None]:
        try:
            region = resolver.regions(path, rgb, several=False)[0]
        except NoLesionFound:
            return None, None
        return predictor.preprocessor(rgb, region.box), region

    def classify() -> None:  # the decoded frames, preprocessed on the worker threads (boxes found there too)
        done = list(parallel_map(prep, rgbs))
        kept.extend(a is not None for a, _ in done)
        if found := [(a, r) for a, r in done if a is not None]:
            probs.append(predictor.predict_arrays(np.stack([a for a, _ in found])))
            regions.extend(r for _, r in found)
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
        return None, [], []
    if not all(kept):
        problems.append(_without_lesion(path, kept.count(False), len(kept)))
    return (np.concatenate(probs) if probs else None), [m for m, k in zip(meta, kept) if k], regions


def _decoded(predictor: Predictor, path: Path, resolver: RegionResolver):
    """Runs on a worker thread: a still image or DICOM file decoded and preprocessed, (K, S, S) uint8 with each
    item's frame and region (a still image: one item per found lesion; a multi-frame file: the most confident one
    per frame, frames without a found lesion left out and counted in the returned note); a :class:`DataProblem` if it
    cannot be read or no lesion is found; None for a video (streamed instead)."""
    if kind_of(path) == "video":
        return None
    try:
        items = []
        for fr in with_content(read_frames(path), path):
            meta = Frame(np.empty(0, np.uint8), fr.index, fr.time)
            try:
                found = resolver.regions(path, fr.rgb, fr.pixel_mm)
            except NoLesionFound as exc:
                items.append(exc)
                continue
            items.append([(predictor.preprocessor(fr.rgb, r.box), meta, r) for r in found])
    except (ImageReadError, BoxError) as exc:
        return DataProblem(str(path), str(exc).removeprefix(f"{path}: "))
    skipped = sum(isinstance(x, NoLesionFound) for x in items)
    if len(items) == 1 and skipped:
        return DataProblem(str(path), str(items[0]).removeprefix(f"{path}: "))
    note = _without_lesion(path, skipped, len(items)) if skipped else None
    if skipped == len(items):
        return note
    frames = [f for f in items if not isinstance(f, NoLesionFound)]
    flat = [x for f in frames for x in (f if len(items) == 1 else f[:1])]
    return np.stack([a for a, _, _ in flat]), [m for _, m, _ in flat], [r for _, _, r in flat], note


def _add_rows(predictor: Predictor, path: Path, pr: np.ndarray, meta: list[Frame], regions: list[Region],
              window: int, rows: list[dict], frame_rows: dict[str, list[dict]]) -> None:
    """The file's rows (a still image: one per lesion; a clip: one, from its frames' mean probability) and, for a
    clip, its per-frame rows."""
    if all(m.time is None and m.index == 0 for m in meta):
        for k, (p, region) in enumerate(zip(pr, regions)):
            lesion = {"lesion": k + 1} if len(regions) > 1 else {}
            rows.append(prediction_row(predictor, str(path), p) | lesion | region.fields())
        return
    p_mal = pr[:, predictor.malignant_index]
    frame_rows[str(path)] = [{"frame": fr.index, "time_s": "" if fr.time is None else round(fr.time, 3),
                              "p_malignant": round(float(p), 4), "p_malignant_smoothed": round(float(q), 4)}
                             | region.fields() for fr, p, q, region in zip(meta, p_mal, smooth(p_mal, window), regions)]
    sources = sorted({r.source for r in regions} - {"whole image"})
    rows.append(prediction_row(predictor, str(path), pr.mean(axis=0), frames=len(pr))
                | ({"box_source": "+".join(sources)} if sources else {}))


def _in_one_batch(predictor: Predictor, arrays: list[np.ndarray]):
    """The probabilities of each (K_i, S, S) array in ``arrays``, (K_i, C) each, from one classifier call."""
    if not arrays:
        return iter(())
    p = predictor.predict_arrays(np.concatenate(arrays))
    return iter(np.split(p, np.cumsum([len(a) for a in arrays])[:-1]))


def predict_sources(predictor: Predictor, paths: list[Path], window: int = 5, chunk: int = 32, progress: bool = False,
                    box: Box | None = None, finder: LesionFinder | None = None
                    ) -> tuple[list[dict], dict[str, list[dict]], list[DataProblem]]:
    """Returns one row per file (for a multi-frame DICOM or a video: the clip's result from the mean per-frame
    probability; for a still image where the finder found several lesions: one row per lesion), per-frame rows for
    every multi-frame file (with the probability smoothed over ``window`` frames), and the files that could not be
    read, which are skipped. A clip that ended early (a truncated video) is predicted from the frames that were
    decoded and is also listed among the problems, with what happened.

    Images and DICOM files are decoded and preprocessed ``chunk`` files at a time on the policy's worker threads
    (:mod:`rcdnet.runtime`), then classified; a video is decoded and classified as it streams. What a
    region-of-interest model classifies (``box``, a mask beside the file, the lesions ``finder`` finds) is decided by
    :class:`~rcdnet.predict.regions.RegionResolver`; every row says which box it used."""
    resolver = RegionResolver(predictor.preprocessor.roi, box, finder)
    rows, frame_rows, problems = [], {}, []
    bar = with_progress(range(len(paths)), len(paths), "predict", progress, unit="file")
    ticks = iter(bar)
    for start in range(0, len(paths), chunk):
        part = [Path(p) for p in paths[start:start + chunk]]
        # decode and preprocess a chunk on the worker threads, then classify its still images in one batch: the two
        # phases take turns, as torch's threads and the workers side by side on the same cores slow each other down
        items = list(parallel_map(lambda p: _decoded(predictor, p, resolver), part))
        classified = _in_one_batch(predictor, [item[0] for item in items if isinstance(item, tuple)])
        for path, item in zip(part, items):
            next(ticks, None)
            if isinstance(item, DataProblem):
                problems.append(item)
                continue
            if item is not None and item[3] is not None:  # frames without a found lesion
                problems.append(item[3])
            pr, meta, regions = (_stream_probabilities(predictor, path, chunk, problems, resolver) if item is None
                                 else (next(classified), item[1], item[2]))
            if pr is not None:
                _add_rows(predictor, path, pr, meta, regions, window, rows, frame_rows)
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


def model_inputs(predictor: Predictor, paths: list[Path], finder: LesionFinder | None = None
                 ) -> tuple[np.ndarray, list[str], list[DataProblem]]:
    """What the model would classify in each still image or DICOM file, preprocessed: (N, S, S) uint8 (one per
    found lesion or frame), the file each came from, and the files skipped (unreadable, no lesion found, a video)."""
    resolver = RegionResolver(predictor.preprocessor.roi, None, finder)
    arrays, names, problems = [], [], []
    for start in range(0, len(paths), 32):
        part = [Path(p) for p in paths[start:start + 32]]
        for path, item in zip(part, parallel_map(lambda p: _decoded(predictor, p, resolver), part)):
            if item is None:
                problems.append(DataProblem(str(path), "a video: give its frames as images or a DICOM file"))
            elif isinstance(item, DataProblem):
                problems.append(item)
            else:
                arrays.append(item[0])
                names += [str(path)] * len(item[0])
                if item[3] is not None:  # a clip's frames without a lesion found: said, as predict says it
                    problems.append(item[3])
    s = predictor.preprocessor.size
    return (np.concatenate(arrays) if arrays else np.zeros((0, s, s), np.uint8)), names, problems
