"""Throughput and latency of ``rcdnet serve`` under a bounded concurrent load on loopback.

    python scripts/bench_service.py MODEL [--requests 200] [--concurrency 4] [--endpoint predict]

Starts ``rcdnet serve MODEL`` on a free 127.0.0.1 port, waits for /health, then sends ``--requests`` uploads of
real BUSI validation images (cycled) from ``--concurrency`` concurrent clients and stops by itself (and after
``--max-seconds`` at the latest). Prints requests/s, p50/p95/max latency and the number of errors; the server is
stopped afterwards. MODEL: run directory, checkpoint or exported .onnx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from rcdnet.data.readers import load_dataset
from rcdnet.evaluation.report import environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, payloads: list[tuple[str, bytes]], n: int, concurrency: int, max_seconds: float) -> dict:
    latencies, errors, statuses = [], 0, {}
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(payloads[i % len(payloads)])
    deadline = time.perf_counter() + max_seconds

    async def worker(client: httpx.AsyncClient):
        nonlocal errors
        while not queue.empty() and time.perf_counter() < deadline:
            name, data = queue.get_nowait()
            t0 = time.perf_counter()
            try:
                r = await client.post(url, files={"file": (name, data, "image/png")})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                errors += r.status_code != 200
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"requests": len(lat), "errors": errors, "statuses": statuses, "seconds": wall,
            "requests_per_s": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "max_ms": float(lat.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--endpoint", default="predict", choices=["predict", "explain"])
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--json")
    args = ap.parse_args()
    samples = load_dataset("udiat", None)[0][:32]
    payloads = [(Path(s.path).name, Path(s.path).read_bytes()) for s in samples]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "rcdnet", "serve", args.model, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise SystemExit("server did not start: " + server.stderr.read().decode()[-2000:])
        asyncio.run(load(f"{url}/{args.endpoint}", payloads, 8, 1, 60))  # warm-up
        res = asyncio.run(load(f"{url}/{args.endpoint}", payloads, args.requests, args.concurrency,
                               args.max_seconds))
    finally:
        server.terminate()
        server.wait(30)
    env = environment()
    print(f"commit {env['commit']}, {env['date']}, {env['hardware']}")
    print(f"POST /{args.endpoint} with {args.model}: {res['requests']} requests (UDIAT images, {args.concurrency} "
          f"concurrent clients) in {res['seconds']:.1f} s: {res['requests_per_s']:.1f} requests/s, latency p50 "
          f"{res['p50_ms']:.0f} ms, p95 {res['p95_ms']:.0f} ms, max {res['max_ms']:.0f} ms; errors: {res['errors']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "model": args.model, **vars(args), **res}, indent=1,
                                              default=str))


if __name__ == "__main__":
    main()
