"""Speed of the automatic region-of-interest mode, end to end from a decoded frame, per stage.

    python scripts/bench_automatic.py ROI_MODEL --localiser MODEL [--images 48] [--threads N] [--json OUT]

ROI_MODEL is a region-of-interest model (run dir, .pt or .onnx from ``rcdnet export``); MODEL one with a
localisation head (.pt or .onnx). For each of ``--images`` UDIAT originals, already decoded (as a video frame would
be), one frame at a time: the localiser's preprocessing of the whole frame (resize, denoising, CLAHE), its network,
the found box on the original's pixels, the region of interest cut around it and preprocessed, and the classifier.
Reported: the median time of each stage and frames per second end to end (the mean over all frames), on the
threads of the process's policy. A first pass warms up, the second is timed. Then the same frames as a video clip
(resized to 560 x 420, MPEG-4) through `rcdnet predict ROI_MODEL CLIP --localiser MODEL`'s own path
(``predict_sources``: decoding, the frames of each chunk preprocessed and located on the worker threads, the
classifier on the chunk): frames per second streamed, the fastest of two passes.
Both networks run on the process's engine (``RCDNET_ENGINE``, default ONNX Runtime); the page says which.
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
from rcdnet.evaluation.report import environment
from rcdnet.predict import load_predictor
from rcdnet.predict.localise import Localiser, region_box

STAGES = ("localiser preprocessing", "localiser network", "box on the original", "ROI preprocessing",
          "classifier network")


def time_frame(rgb: np.ndarray, localiser: Localiser, classifier) -> dict[str, float]:
    """One frame through the automatic mode; seconds per stage."""
    t, times = time.perf_counter(), {}

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[name], t = now - t, now

    pre = localiser.predictor.preprocessor
    x = pre(rgb)[None]
    lap(STAGES[0])
    lesion = localiser.predictor.localise(x)[0]
    lap(STAGES[1])
    box = region_box(pre.to_original(lesion, rgb.shape[:2]))
    lap(STAGES[2])
    roi = classifier.preprocessor(rgb, box)[None]
    lap(STAGES[3])
    classifier.predict_arrays(roi)
    lap(STAGES[4])
    return times


def clip_fps(frames: list[np.ndarray], localiser: Localiser, classifier, tmp: Path) -> float:
    """Frames per second of ``predict_sources`` on the frames as an MPEG-4 clip (fastest of two passes)."""
    import av
    import cv2

    from rcdnet.predict import predict_sources

    clip = tmp / "clip.mp4"
    with av.open(str(clip), "w") as out:
        st = out.add_stream("mpeg4", rate=25)
        st.width, st.height, st.pix_fmt = 560, 420, "yuv420p"
        for f in frames:
            for pk in st.encode(av.VideoFrame.from_ndarray(cv2.resize(f, (560, 420)), format="rgb24")):
                out.mux(pk)
        for pk in st.encode():
            out.mux(pk)
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        rows, _, problems = predict_sources(classifier, [clip], localiser=localiser)
        best = min(best, time.perf_counter() - t0)
        if problems or rows[0]["frames"] != len(frames):
            raise SystemExit(f"clip: {problems or rows}")
    return len(frames) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--localiser", required=True)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    runtime.apply(args.threads)
    classifier, localiser = load_predictor(args.model), Localiser(args.localiser)
    frames = [read_image(s.path) for s in load_dataset("udiat")[0][:args.images]]
    for rgb in frames[:4]:  # warm-up
        time_frame(rgb, localiser, classifier)
    rows = [time_frame(rgb, localiser, classifier) for rgb in frames]
    per_stage = {s: statistics.median(r[s] for r in rows) * 1000 for s in STAGES}
    fps = len(rows) / sum(sum(r.values()) for r in rows)
    env = environment()
    with tempfile.TemporaryDirectory() as tmp:
        streamed = clip_fps(frames, localiser, classifier, Path(tmp))
    engines = {"classifier": classifier.runtime, "localiser": localiser.predictor.runtime}
    out = {"model": args.model, "localiser": args.localiser, "frames": len(rows), "median_ms": per_stage,
           "frames_per_s": fps, "clip_frames_per_s": streamed, "engines": engines, "env": env}
    print(f"automatic mode: {args.model} with boxes from {args.localiser}, {len(rows)} UDIAT frames, "
          f"{env['threads']}; commit {env['commit']}, {env['hardware']}, {env['date']}; engines: classifier "
          f"{engines['classifier']}, localiser {engines['localiser']}")
    print("| stage | median ms per frame |\n|---|---|")
    for s, ms in per_stage.items():
        print(f"| {s} | {ms:.1f} |")
    print(f"| **end to end, one frame at a time** | **{1000 / fps:.1f}** ({fps:.1f} frames/s) |")
    print(f"\nAs a clip through `rcdnet predict`'s path (frames preprocessed on {env['threads'].split(' ')[0]} worker "
          f"threads, then classified): **{streamed:.1f} frames/s**.")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
