"""Fuzz every decoder with damaged real files: nothing may escape as anything but a per-file ImageReadError, and the
service may answer nothing in the 5xx range.

    python scripts/fuzz_decoders.py [--cases 500] [--seed 0] [--service]

The corpus, built from real data: a BUSI PNG, the same picture as a JPEG, three ultrasound DICOM files from
pydicom-data (uncompressed RGB, JPEG 2000, a 16-bit palette image) and a 12-frame MP4 of BUSI pictures (PyAV).
Each case changes 1-7 bytes of a file (in its first 4 KB, where the headers are; anywhere for the MP4) and cuts
three cases in ten short. ``--cases`` per file, seeded; ``--service`` also posts every case to the service (an
untrained model, in process) and counts its status codes. Prints counts, the escapes with their types, and the time.
"""

from __future__ import annotations

import argparse
import collections
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def mutate(data: bytes, rng: np.random.Generator, head: int = 4000) -> bytes:
    """``data`` with 1-7 bytes of its first ``head`` changed at random, cut short three times in ten."""
    b = bytearray(data)
    for _ in range(rng.integers(1, 8)):
        b[int(rng.integers(0, min(len(b), head)))] = int(rng.integers(0, 256))
    return bytes(b[:int(rng.integers(132, len(b)))] if rng.random() < 0.3 else b)


def jpeg(rgb: np.ndarray, quality: int = 75) -> bytes:
    """An (H, W, 3) uint8 picture as JPEG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_jpeg_dicom(path: Path, frame: bytes, rows: int, cols: int, frames: int) -> Path:
    """A colour JPEG-baseline ultrasound DICOM holding ``frames`` copies of one encoded ``frame``, its header saying
    ``rows`` x ``cols`` (a DICOM bomb when they are many and large, or when the header lies)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, UltrasoundImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = UltrasoundImageStorage, meta.MediaStorageSOPInstanceUID, "US"
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel, ds.PlanarConfiguration = rows, cols, frames, 3, 0
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "YBR_FULL_422", 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([frame] * frames)
    ds["PixelData"].VR = "OB"
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)


def corpus(data_root: Path) -> dict[str, tuple[bytes, int]]:
    """name -> (bytes, how far into the file mutations reach)."""
    import av
    from PIL import Image
    from pydicom.data import get_testdata_file

    busi = data_root / "BUSI" / "Dataset_BUSI_with_GT" / "malignant"
    png = (busi / "malignant (1).png").read_bytes()
    rgb = np.asarray(Image.open(busi / "malignant (1).png").convert("RGB"))
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, format="JPEG", quality=85)
    clip = io.BytesIO()
    with av.open(clip, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 200, 160, "yuv420p"
        for i in range(1, 13):
            frame = np.asarray(Image.open(busi / f"malignant ({i}).png").convert("RGB"))[:160, :200]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    files = {"image.png": (png, 4000), "image.jpg": (jpeg.getvalue(), 4000),
             "clip.mp4": (clip.getvalue(), len(clip.getvalue()))}
    for name in ("US1_UNCR.dcm", "US1_J2KR.dcm", "gdcm-US-ALOKA-16.dcm"):
        files[name] = (Path(get_testdata_file(name)).read_bytes(), 4000)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=500, help="damaged copies of each file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--service", action="store_true", help="also post every case to the service")
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    from rcdnet.data.decode import ImageReadError, read_frames

    rng = np.random.default_rng(args.seed)
    files = corpus(Path(args.data))
    outcome, escapes, statuses = collections.Counter(), collections.Counter(), collections.Counter()
    client = _client() if args.service else None
    t0 = time.perf_counter()
    for name, (data, head) in files.items():
        for i in range(args.cases):
            case = mutate(data, rng, head)
            try:
                for _ in read_frames(f"{i}-{name}", case, max_frames=5):
                    pass
                outcome[f"{name}: decoded"] += 1
            except ImageReadError:
                outcome[f"{name}: refused"] += 1
            except Exception as exc:  # noqa: BLE001 - what this script looks for
                escapes[f"{name}: {type(exc).__name__}: {str(exc)[:80]}"] += 1
            if client is not None:
                statuses[client.post("/predict", files={"file": (name, case)}).status_code] += 1
    seconds = time.perf_counter() - t0
    n = args.cases * len(files)
    print(f"{n} damaged files ({args.cases} of each of {len(files)}), seed {args.seed}, {seconds:.1f} s")
    for k in sorted(outcome):
        print(f"  {k}: {outcome[k]}")
    print(f"escaped as something other than a per-file error: {sum(escapes.values())}")
    for k, v in escapes.most_common():
        print(f"  {v} x {k}")
    if client is not None:
        print("service status codes: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    sys.exit(1 if escapes or any(k >= 500 for k in statuses) else 0)


def _client():
    """The service for an untrained whole-image model, in process (the decoders are what is tested)."""
    import torch
    from fastapi.testclient import TestClient

    from rcdnet.config import load_config
    from rcdnet.models.registry import build_model
    from rcdnet.serve.app import create_app
    from rcdnet.models.checkpoint import CHECKPOINT_FORMAT

    cfg = load_config(None, {"data": {"roi_margin": 0, "sources": ["busi"], "external": []}})
    path = Path(tempfile.mkdtemp()) / "untrained.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "classes": ["benign", "malignant"],
                "model": build_model(cfg, 2, pretrained=False).state_dict(), "thresholds": {"default": 0.5},
                "val_keys": []}, path)
    return TestClient(create_app(path, max_upload_mb=20), raise_server_exceptions=False)


if __name__ == "__main__":
    main()
