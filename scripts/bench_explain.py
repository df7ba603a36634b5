"""Heat-map speed per method and memory over many images, on real preprocessed images.

    python scripts/bench_explain.py RUN_DIR_OR_CHECKPOINT [--images 1000] [--speed-images 32]

1. Speed: heat maps per second for each method (batches of 16; Score-CAM on 4 images, it runs one forward pass
   per feature channel).
2. Memory: Grad-CAM over ``--images`` images (UDIAT and BUSI cycled), a fresh ``HeatMapper`` per image opened
   and closed with ``with`` (the pattern a service uses). Resident memory is sampled after 10% of the images and
   at the end; the growth between the two, and the forward hooks left on the model, are reported. A hook leak
   or kept activations would show as growth proportional to the images.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rcdnet.data.preprocess import preprocess_samples
from rcdnet.data.sources import load_dataset
from rcdnet.runtime import environment
from rcdnet.explain.cam import METHODS
from rcdnet.explain.images import mapper
from rcdnet.predict.pytorch import TorchPredictor as Predictor


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--speed-images", type=int, default=32)
    args = ap.parse_args()
    predictor = Predictor(args.checkpoint)
    samples = load_dataset("udiat", None, classes=tuple(predictor.classes))[0]
    samples += load_dataset("busi", None, classes=tuple(predictor.classes))[0]
    _, images, _ = preprocess_samples(samples[:200], predictor.preprocessor)
    env = environment()
    print(f"commit {env['commit']}, {env['date']}, {env['hardware']}, torch {env['torch']}, "
          f"{torch.get_num_threads()} threads\n")
    speeds = {}
    print("| method | images | heat maps / s |\n|---|---|---|")
    for method in METHODS:
        n = 4 if method == "scorecam" else args.speed_images
        with mapper(predictor, method) as hm:
            hm(images[:2])  # warm-up
            t0 = time.perf_counter()
            hm(images[:n])
            speeds[method] = n / (time.perf_counter() - t0)
        print(f"| {method} | {n} | {speeds[method]:.2f} |")

    marks = {}
    first = max(1, args.images // 10)
    t0 = time.perf_counter()
    for i in range(args.images):
        with mapper(predictor, "gradcam") as hm:
            hm(images[i % len(images)][None])
        if i + 1 in (first, args.images):
            marks[i + 1] = rss_mb()
    elapsed = time.perf_counter() - t0
    hooks = sum(len(m._forward_hooks) for m in predictor.model.modules())
    growth = marks[args.images] - marks[first]
    print(f"\nGrad-CAM, one HeatMapper per image, {args.images} images in {elapsed:.0f} s: resident memory "
          f"{marks[first]:.0f} MB after {first}, {marks[args.images]:.0f} MB after {args.images} "
          f"(growth {growth:+.1f} MB); forward hooks left on the model: {hooks}")
    print(json.dumps({"speeds": speeds, "rss_mb": marks, "growth_mb": growth, "hooks_left": hooks,
                      "env": env}, default=str))


if __name__ == "__main__":
    main()
