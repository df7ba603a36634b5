"""CPU inference speed of a trained RcdNet: PyTorch eager, channels-last, TorchScript, ONNX Runtime fp32 and INT8.

    python scripts/bench_inference.py RUN_DIR --onnx MODEL.onnx [--int8 MODEL.int8.onnx] [--no-tta] [--json OUT]

Every variant computes the same decision function (grey image -> calibrated probabilities, mirrored-image
averaging as the checkpoint does unless --no-tta) on real preprocessed validation images. Reported: single-image
latency (median of --repeats calls at batch 1) and batched throughput (batch 32), each also as a ratio to PyTorch
eager measured in the same run, since absolute numbers drift with machine load. Also: preprocessing time per
image (resize, denoising, CLAHE), and frames per second end to end (decode, preprocess, classify) on a clip made
from real images. The ONNX files come from ``rcdnet export``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rcdnet.data.decode import read_image
from rcdnet.data.preprocess import preprocess_samples
from rcdnet.data.sources import load_dataset
from rcdnet.evaluation.complexity import time_calls
from rcdnet.runtime import environment
from rcdnet.predict import OnnxPredictor, predict_sources
from rcdnet.predict import TorchPredictor as Predictor


def _timeit(fn, x, repeats: int) -> list[float]:
    return time_calls(lambda: fn(x), repeats)


def torch_variants(predictor: Predictor, example: torch.Tensor) -> dict:
    fn = predictor.decision.eval()
    cl = copy.deepcopy(predictor.decision).eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(cl, example[:1])))

    def run(m):
        def call(x):
            with torch.inference_mode():
                return m(x).numpy()
        return call

    return {"pytorch eager": run(fn), "pytorch channels-last": run(cl), "torchscript (frozen, optimised)": run(traced)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--int8")
    ap.add_argument("--no-tta", action="store_true")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json")
    args = ap.parse_args()

    predictor = Predictor(args.checkpoint, tta=False if args.no_tta else None)
    val = set(predictor.val_keys)
    samples = [s for s in load_dataset("busi", None, classes=tuple(predictor.classes))[0] if s.key in val]
    kept, images, _ = preprocess_samples(samples[: args.batch], predictor.preprocessor)
    x = torch.from_numpy(images[:, None].astype(np.float32))
    variants = torch_variants(predictor, x)
    for name, path in (("onnx runtime fp32", args.onnx), ("onnx runtime int8", args.int8)):
        if path:
            op = OnnxPredictor(path, batch_size=args.batch)
            if op.tta != predictor.tta:
                raise SystemExit(f"{path}: exported with tta={op.tta}, benchmark runs tta={predictor.tta}")
            variants[name] = lambda t, op=op: op.session.run(None, {"image": t.numpy()})[0]
    env = environment()
    print(f"commit {env['commit']}, {env['date']}, {env['hardware']}, torch {env['torch']}, "
          f"{torch.get_num_threads()} threads, mirrored-image averaging: {predictor.tta}\n")
    ref = variants["pytorch eager"](x)
    rows = []
    for name, fn in variants.items():
        single = statistics.median(_timeit(fn, x[:1], args.repeats))
        batched = min(_timeit(fn, x, 5))
        diff = float(np.abs(fn(x) - ref).max())
        rows.append({"variant": name, "single_ms": 1000 * single, "images_per_s": len(x) / batched,
                     "max_abs_diff": diff})
    base = rows[0]
    print("| variant | single image (ms) | vs eager | batch 32 (images/s) | vs eager | max abs diff vs eager |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        r["single_speedup"] = base["single_ms"] / r["single_ms"]
        r["batch_speedup"] = r["images_per_s"] / base["images_per_s"]
        print(f"| {r['variant']} | {r['single_ms']:.2f} | {r['single_speedup']:.2f}x | {r['images_per_s']:.1f} | "
              f"{r['batch_speedup']:.2f}x | {r['max_abs_diff']:.1e} |")

    raw = [read_image(s.path) for s in kept[:16]]
    t0 = time.perf_counter()
    for im in raw:
        predictor.preprocessor(im)
    pre_ms = 1000 * (time.perf_counter() - t0) / len(raw)
    print(f"\npreprocessing (resize, non-local-means denoising, CLAHE): {pre_ms:.1f} ms per image")

    import av

    fastest = OnnxPredictor(args.int8 or args.onnx)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        frames = [np.ascontiguousarray(im[:320, :400]) for im in raw for _ in range(4)]  # 64 frames
        with av.open(str(clip), "w") as out:
            st = out.add_stream("mpeg4", rate=25)
            st.width, st.height, st.pix_fmt = 400, 320, "yuv420p"
            for f in frames:
                for pk in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    out.mux(pk)
            for pk in st.encode():
                out.mux(pk)
        video = {}
        for name, p in (("pytorch eager", predictor), (Path(args.int8 or args.onnx).name, fastest)):
            t0 = time.perf_counter()
            rows_v, _, _ = predict_sources(p, [clip])
            video[name] = rows_v[0]["frames"] / (time.perf_counter() - t0)
            print(f"video, {rows_v[0]['frames']} frames 400x320, decode + preprocess + classify with {name}: "
                  f"{video[name]:.1f} frames/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "tta": predictor.tta, "rows": rows,
                                               "preprocess_ms": pre_ms, "video_fps": video}, indent=1, default=str))


if __name__ == "__main__":
    main()
