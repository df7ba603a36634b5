"""Speed of the automatic mode (image in, lesion found, outlined, measured, classified), end to end, per stage.

    python scripts/bench_automatic.py RUN [--images 48] [--threads N] [--json OUT]

RUN is a run directory that ships a classifier and its lesion finder (``checkpoints/segmenter.pt``: what
`make main` writes). For each of ``--images`` UDIAT originals, already decoded (as a video frame would be), one at a
time: the finder's input (grey, squashed to its square), its network, the lesions on the original's pixels (map
resized back, regions, outline and diameters), the region of interest cut around the most confident one and
preprocessed, and the classifier. Reported: the median time of each stage and images per second end to end (the
mean over all images), on the threads of the process's policy; a first pass warms up. Then the same images through
`rcdnet predict RUN`'s own path (``predict_sources``: decoding, preprocessing and finding on the worker threads,
the classifier per chunk) twice: as PNG files in a folder, and as one MPEG-4 clip (560 x 420); images (frames) per
second, the fastest of two passes. The classifier runs on the process's engine (``RCDNET_ENGINE``, default ONNX
Runtime, its graph exported from the checkpoint), and so does the finder; the page says which.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from rcdnet import runtime
from rcdnet.data.decode import read_image
from rcdnet.data.sources import load_dataset
from rcdnet.runtime import environment
from rcdnet.predict import load_predictor, predict_sources
from rcdnet.segment.finder import LesionFinder, finder_for
from rcdnet.segment.lesions import measure, regions

STAGES = ("finder input", "finder network", "lesions on the original", "ROI preprocessing", "classifier network")


def time_image(rgb: np.ndarray, finder: LesionFinder, classifier) -> dict[str, float]:
    """One image through the automatic mode; seconds per stage."""
    t, times = time.perf_counter(), {}

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[name], t = now - t, now

    small = finder.grey(rgb)[None]
    lap(STAGES[0])
    prob = finder.maps(small)[0]
    lap(STAGES[1])
    found = [measure(r, c) for r, c in regions(finder.on_original(prob, rgb.shape[:2]), finder.min_area)]
    box = found[0].box if found else (0, 0, rgb.shape[1], rgb.shape[0])
    lap(STAGES[2])
    roi = classifier.preprocessor(rgb, box)[None]
    lap(STAGES[3])
    classifier.predict_arrays(roi)
    lap(STAGES[4])
    return times


def write_inputs(frames: list[np.ndarray], tmp: Path) -> tuple[list[Path], Path]:
    """The images as PNG files in a folder, and as one MPEG-4 clip."""
    import av
    import cv2

    pngs = []
    for i, f in enumerate(frames):
        pngs.append(tmp / f"{i:03d}.png")
        cv2.imwrite(str(pngs[-1]), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    clip = tmp / "clip.mp4"
    with av.open(str(clip), "w") as out:
        st = out.add_stream("mpeg4", rate=25)
        st.width, st.height, st.pix_fmt = 560, 420, "yuv420p"
        for f in frames:
            for pk in st.encode(av.VideoFrame.from_ndarray(cv2.resize(f, (560, 420)), format="rgb24")):
                out.mux(pk)
        for pk in st.encode():
            out.mux(pk)
    return pngs, clip


def streamed(classifier, finder: LesionFinder, paths: list[Path], n: int) -> float:
    """Images per second of ``predict_sources`` over ``paths`` (fastest of two passes); every file must answer."""
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        rows, _, problems = predict_sources(classifier, paths, finder=finder)
        best = min(best, time.perf_counter() - t0)
        refused = [p for p in problems if "no lesion found" not in p.problem]
        answered = {r["image"] for r in rows}
        if refused or (len(paths) == 1 and str(paths[0]) not in answered):  # a clip must get its answer
            raise SystemExit(f"automatic mode failed: {(refused or problems)[:3]}")
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    runtime.apply(args.threads)
    classifier = load_predictor(args.model)
    finder = finder_for(classifier, args.model)
    if finder is None:
        raise SystemExit(f"{args.model}: no lesion finder shipped beside the model (checkpoints/segmenter.pt)")
    frames = [read_image(s.path) for s in load_dataset("udiat")[0][:args.images]]
    for rgb in frames[:4]:  # warm-up
        time_image(rgb, finder, classifier)
    rows = [time_image(rgb, finder, classifier) for rgb in frames]
    per_stage = {s: statistics.median(r[s] for r in rows) * 1000 for s in STAGES}
    ips = len(rows) / sum(sum(r.values()) for r in rows)
    env = environment()
    with tempfile.TemporaryDirectory() as tmp:
        pngs, clip = write_inputs(frames, Path(tmp))
        folder, video = streamed(classifier, finder, pngs, len(pngs)), streamed(classifier, finder, [clip], len(frames))
    out = {"model": args.model, "images": len(rows), "median_ms": per_stage, "images_per_s": ips,
           "folder_images_per_s": folder, "clip_frames_per_s": video, "classifier_engine": classifier.runtime,
           "finder_engine": finder.runtime, "env": env}
    print(f"automatic mode: {args.model} (classifier on {classifier.runtime}, finder on {finder.runtime}), {len(rows)} UDIAT "
          f"images, {env['threads']}; commit {env['commit']}, {env['hardware']}, {env['date']}")
    print("| stage | median ms per image |\n|---|---|")
    for s, ms in per_stage.items():
        print(f"| {s} | {ms:.1f} |")
    print(f"| **end to end, one image at a time** | **{1000 / ips:.1f}** ({ips:.1f} images/s) |")
    print(f"\nThrough `rcdnet predict`'s path (decoding and finding on {env['threads'].split(' ')[0]} worker threads, "
          f"then the classifier per chunk): a folder of PNGs **{folder:.1f} images/s**, a clip **{video:.1f} "
          "frames/s**.")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
