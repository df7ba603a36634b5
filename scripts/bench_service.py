"""Throughput, latency and memory of ``rcdnet serve`` under a bounded concurrent load on loopback.

    python scripts/bench_service.py MODEL [--requests 200] [--concurrency 8] [--bombs 0.25] [--endpoint predict]

Starts ``rcdnet serve MODEL`` on a free 127.0.0.1 port, waits for /health, then sends ``--requests`` uploads from
``--concurrency`` concurrent clients and stops by itself (and after ``--max-seconds`` at the latest): real UDIAT
images (cycled; only sent, never scored; with the box around each lesion for a region-of-interest model), and with
``--bombs F`` that share of bombs by turns: a 13000 x 13000 PNG of a few hundred KB (refused with 413 from its
header), a DICOM of 99 colour JPEG frames of 2000 x 2000 (decoded frame by frame) and a DICOM whose 64 x 64 header
hides a frame claiming 20000 x 20000 (refused before decoding). Prints requests/s, the answers by HTTP status,
p50/p95/max latency of the normal requests (from the first try to the answer: a client that gets 503 waits the
``Retry-After`` seconds and sends again), and the server's peak resident memory (sampled every 50 ms from /proc);
the server is stopped afterwards. The load passes when no answer is a 5xx other than 503 and peak memory stays
under ``--max-rss-mb``. MODEL: run directory, checkpoint or exported .onnx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from rcdnet.data.sources import load_dataset
from rcdnet.runtime import environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bomb(side: int = 13000) -> bytes:
    """A black grey PNG of side x side pixels: about 0.5 MB that would decode to side^2 bytes."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def bombs() -> list[tuple[str, bytes]]:
    """The bombs of the mix: a PNG of 13000 x 13000 pixels, a DICOM of 99 colour JPEG frames of 2000 x 2000 (396 MP,
    just under the per-file limit: decoded frame by frame) and a DICOM whose 64 x 64 header hides a frame claiming
    20000 x 20000 (refused before decoding)."""
    import tempfile

    import cv2
    from fuzz_decoders import jpeg, make_jpeg_dicom

    folder = Path(tempfile.mkdtemp())
    picture = cv2.resize(_first_udiat(), (2000, 2000))
    small = bytearray(jpeg(picture[:64, :64]))
    k = small.index(b"\xff\xc0")
    small[k + 5:k + 9] = (20000).to_bytes(2, "big") * 2
    return [("bomb.png", bomb()),
            ("bomb-frames.dcm", make_jpeg_dicom(folder / "f.dcm", jpeg(picture), 2000, 2000, 99).read_bytes()),
            ("bomb-liar.dcm", make_jpeg_dicom(folder / "l.dcm", bytes(small), 64, 64, 1).read_bytes())]


def _first_udiat() -> np.ndarray:
    from rcdnet.data.decode import read_image

    return read_image(load_dataset("udiat", None)[0][0].path)


def region_boxes(model: str, samples: list) -> dict[str, str]:
    """For a region-of-interest model, each image's box (around its lesion mask) as the form field; else none."""
    from rcdnet.data.boxes import box_of_mask
    from rcdnet.data.decode import read_mask
    from rcdnet.predict import load_predictor

    if not load_predictor(model).preprocessor.roi:
        return {}
    return {Path(s.path).name: ",".join(map(str, box_of_mask(read_mask(s.mask_paths)))) for s in samples}


class PeakMemory:
    """The largest resident set of process ``pid``, sampled every 50 ms on a background thread (Linux /proc)."""

    def __init__(self, pid: int):
        self.pid, self.peak_mb, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
            except OSError:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


async def load(url: str, payloads: list[tuple[str, bytes]], n: int, concurrency: int, max_seconds: float,
               boxes: dict[str, str] | None = None) -> dict:
    boxes = boxes or {}
    latencies, errors, statuses = [], 0, {}
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(payloads[i % len(payloads)])
    deadline = time.perf_counter() + max_seconds

    async def worker(client: httpx.AsyncClient):
        """Sends its share of the queue; a 503 is counted and the same upload sent again after ``Retry-After``,
        as a well-behaved client does, so every request ends served or refused (latency: first try to answer)."""
        nonlocal errors
        while not queue.empty() and time.perf_counter() < deadline:
            name, data = queue.get_nowait()
            kind, t0 = name.split(".")[0] if name.startswith("bomb") else "image", time.perf_counter()
            while time.perf_counter() < deadline:
                try:
                    r = await client.post(url, files={"file": (name, data, "application/octet-stream")},
                                          data={"box": boxes[name]} if name in boxes else None)
                except httpx.HTTPError:
                    errors += 1
                    break
                key = f"{kind} {r.status_code}"
                statuses[key] = statuses.get(key, 0) + 1
                if r.status_code != 503:
                    errors += r.status_code >= 500
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t0)
                    break
                await asyncio.sleep(float(r.headers.get("retry-after", 1)))

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat = np.array(latencies or [float("nan")]) * 1000
    answered = sum(v for k, v in statuses.items() if not k.endswith("503"))
    return {"requests": answered, "served": len(latencies), "errors": errors, "statuses": statuses, "seconds": wall,
            "requests_per_s": answered / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "max_ms": float(lat.max())}


def screenshot(url: str, image: Path, out: Path) -> None:
    """The page after dropping ``image``, once the heat map has arrived, as a full-page PNG."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url + "/")
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#verdict:not(:empty)", timeout=120_000)
        page.wait_for_function("document.getElementById('heatmap').naturalWidth > 0", timeout=120_000)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    print(f"page screenshot: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--bombs", type=float, default=0.0, help="share of the requests that are image bombs")
    ap.add_argument("--max-rss-mb", type=float, default=3000, help="the memory bound the load must stay under")
    ap.add_argument("--endpoint", default="predict", choices=["predict", "explain"])
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--json")
    ap.add_argument("--screenshot", help="also drop --screenshot-image on the page in headless Chromium and save "
                                         "the page as this PNG (needs Debian's chromium and playwright)")
    ap.add_argument("--screenshot-image", help="the image dropped for the screenshot (default: the first UDIAT image)")
    args = ap.parse_args()
    samples = load_dataset("udiat", None)[0][:32]
    payloads = [(Path(s.path).name, Path(s.path).read_bytes()) for s in samples]
    boxes = region_boxes(args.model, samples)
    if args.bombs > 0:  # one bomb after every k images: a share of 1 / (k + 1); PNG and DICOM bombs by turns
        k, kinds, mixed = max(1, round((1 - args.bombs) / args.bombs)), bombs(), []
        for i, p in enumerate(payloads):
            mixed += [p, kinds[(i // k) % len(kinds)]] if i % k == k - 1 else [p]
        payloads = mixed
        boxes |= {name: "0,0,64,64" for name, _ in kinds} if boxes else {}
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
        asyncio.run(load(f"{url}/{args.endpoint}", payloads[:8], 8, 1, 60, boxes))  # warm-up
        with PeakMemory(server.pid) as mem:
            res = asyncio.run(load(f"{url}/{args.endpoint}", payloads, args.requests, args.concurrency,
                                   args.max_seconds, boxes))
        res["peak_rss_mb"] = round(mem.peak_mb)
        if args.screenshot:
            screenshot(url, Path(args.screenshot_image or samples[0].path), Path(args.screenshot))
    finally:
        server.terminate()
        server.wait(30)
    env = environment()
    print(f"commit {env['commit']}, {env['date']}, {env['hardware']}")
    print(f"POST /{args.endpoint} with {args.model}: {res['requests']} requests (UDIAT images, share of bombs "
          f"{args.bombs:g}, {args.concurrency} concurrent clients) in {res['seconds']:.1f} s: "
          f"{res['requests_per_s']:.1f} requests/s answered; every answer {dict(sorted(res['statuses'].items()))}; "
          f"latency of the "
          f"{res['served']} served: p50 {res['p50_ms']:.0f} ms, p95 {res['p95_ms']:.0f} ms, max {res['max_ms']:.0f} ms; "
          f"5xx other than 503: {res['errors']}; peak server memory {res['peak_rss_mb']} MB (bound {args.max_rss_mb:g})")
    ok = res["errors"] == 0 and res["peak_rss_mb"] < args.max_rss_mb
    print("PASS" if ok else "FAIL")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "model": args.model, **vars(args), **res}, indent=1,
                                              default=str))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
