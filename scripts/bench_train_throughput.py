"""Training and inference throughput of RcdNet on this machine's CPU (images per second).

    python scripts/bench_train_throughput.py [--batch 32] [--steps 5] [--threads 0]

Measures one optimiser step (forward, backward, Adam) at 224 x 224 for each number of frozen EfficientNet stages,
and batched inference, on random inputs (speed does not depend on pixel values for these ops). Prints a table with
each setting's speed-up over full fine-tuning measured in the same run, since absolute numbers drift with machine
load.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from rcdnet.runtime import environment
from rcdnet.models.registry import create_model, freeze_stages, train_mode


def train_speed(freeze: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = create_model("rcdnet", pretrained=False).to(memory_format=torch.channels_last)
    frozen = freeze_stages(model, freeze)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))
    train_mode(model, frozen)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t0)
    return batch / (sum(times) / len(times))


@torch.inference_mode()
def eval_speed(batch: int, steps: int) -> float:
    model = create_model("rcdnet", pretrained=False).eval()
    x = torch.randn(batch, 3, 224, 224)
    model(x)
    t0 = time.perf_counter()
    for _ in range(steps):
        model(x)
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment()
    print(f"commit {env['commit']}, {env['date']}, {env['hardware']}, torch {env['torch']}, {platform.machine()}")
    base = None
    print("| setting | images/s | x full fine-tuning |\n|---|---|---|")
    for freeze in (0, 2, 3):
        s = train_speed(freeze, args.batch, args.steps)
        base = base or s
        print(f"| train, {freeze} stages frozen | {s:.1f} | {s / base:.2f} |")
    e = eval_speed(args.batch, args.steps)
    print(f"| inference (batch {args.batch}) | {e:.1f} | {e / base:.2f} |")


if __name__ == "__main__":
    main()
