"""Frames from what a clinic produces: image files, ultrasound DICOM (single- or multi-frame) and video clips.

:func:`read_frames` turns a file (or its bytes) into (H, W, 3) uint8 RGB frames. Nothing from a DICOM header is
returned except what is needed to decode the pixels, so no patient data can reach outputs or logs.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rcdnet.data.samples import ImageReadError, read_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg"}


class IncompleteVideo(ImageReadError):
    """Raised by :func:`read_frames` after the frames it could decode were yielded: the clip ended before its
    container said it would (a truncated file) or decoding failed midway. Callers keep what they got and say so."""


@dataclasses.dataclass
class Frame:
    """One picture to classify: ``index`` within its file (0 for a still image), ``time`` in seconds for video."""

    rgb: np.ndarray
    index: int = 0
    time: float | None = None


def _head(data: bytes | Path) -> bytes:
    if isinstance(data, bytes):
        return data[:132]
    with open(data, "rb") as fh:
        return fh.read(132)


def kind_of(path: Path, data: bytes | None = None) -> str:
    """'dicom', 'video' or 'image', from the DICOM preamble or the file name."""
    suffix = Path(path).suffix.lower()
    try:
        head = _head(data if data is not None else Path(path))
    except OSError:
        head = b""
    if suffix in DICOM_SUFFIXES or head[128:132] == b"DICM":
        return "dicom"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return "image"


def read_frames(path: str | Path, data: bytes | None = None, max_frames: int | None = None) -> Iterator[Frame]:
    """Frames of an image, DICOM or video file (``data``: its bytes, when it was uploaded rather than on disk).

    Raises :class:`ImageReadError` naming the file for anything that cannot be decoded."""
    path = Path(path)
    if data is None and not path.exists():
        raise ImageReadError(f"{path}: file does not exist")
    kind = kind_of(path, data)
    if kind == "dicom":
        yield from _dicom_frames(path, data, max_frames)
    elif kind == "video":
        yield from _video_frames(path, data, max_frames)
    elif data is None:
        yield Frame(read_image(path))
    else:
        yield Frame(_image_from_bytes(path, data))


def _image_from_bytes(path: Path, data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image, DICOM or video file that can be read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: corrupt or truncated image ({exc})") from None
    if img.mode in ("I;16", "I;16B", "I", "F"):
        return _to_uint8_rgb(np.asarray(img, np.float64), "MONOCHROME2")
    arr = np.asarray(img.convert("RGB"))
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ImageReadError(f"{path}: image too small ({arr.shape[1]}x{arr.shape[0]})")
    return arr


def _to_uint8_rgb(arr: np.ndarray, photometric: str) -> np.ndarray:
    """A decoded DICOM frame (H, W) or (H, W, 3), any bit depth -> (H, W, 3) uint8 RGB."""
    if arr.ndim == 2:
        a = arr.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        if arr.dtype != np.uint8 or photometric == "MONOCHROME1":
            a = (a - lo) / (hi - lo + 1e-12) * 255
        if photometric == "MONOCHROME1":  # 0 is white
            a = 255 - a
        g = np.clip(a, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        arr = ((a - a.min()) / (a.max() - a.min() + 1e-12) * 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def _dicom_frames(path: Path, data: bytes | None, max_frames: int | None) -> Iterator[Frame]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data) if data is not None else str(path))
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise ImageReadError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None
    if "PixelData" not in ds:
        raise ImageReadError(f"{path}: DICOM file without pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    try:
        pixels = ds.pixel_array  # pydicom 3 returns YBR colour data already converted to RGB
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            pixels = apply_color_lut(pixels, ds)
    except Exception as exc:  # decoders raise many types (missing plugin, corrupt stream)
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "unknown transfer syntax")
        raise ImageReadError(f"{path}: DICOM pixel data could not be decoded ({name}: {type(exc).__name__}: "
                             f"{exc})") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rgb_like = pixels.ndim == 4 or (pixels.ndim == 3 and pixels.shape[-1] in (3, 4) and frames == 1)
    if frames == 1:
        pixels = pixels[None] if (pixels.ndim == 2 or rgb_like) else pixels
    for i, frame in enumerate(pixels):
        if max_frames is not None and i >= max_frames:
            break
        yield Frame(_to_uint8_rgb(np.asarray(frame), photometric), index=i)


def _video_frames(path: Path, data: bytes | None, max_frames: int | None) -> Iterator[Frame]:
    import av

    try:
        container = av.open(io.BytesIO(data) if data is not None else str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from None
    with container:
        if not container.streams.video:
            raise ImageReadError(f"{path}: file holds no video stream")
        stream = container.streams.video[0]
        declared = stream.frames or 0  # 0 where the container does not say
        n, stopped = 0, None
        try:
            for frame in container.decode(stream):
                if max_frames is not None and n >= max_frames:
                    return
                t = float(frame.pts * stream.time_base) if frame.pts is not None else None
                yield Frame(frame.to_ndarray(format="rgb24"), index=n, time=t)
                n += 1
        except av.FFmpegError as exc:
            if n == 0:
                raise ImageReadError(f"{path}: video could not be decoded ({exc})") from None
            stopped = f"decoding failed: {exc}"
        if n == 0:
            raise ImageReadError(f"{path}: video holds no frames")
        if (stopped or declared > n) and (max_frames is None or n < max_frames):
            of = f" of the {declared} its container declares" if declared > n else ""
            raise IncompleteVideo(f"{path}: video ended after {n} frames{of} "
                                  f"({stopped or 'file truncated?'}); only those {n} frames were used")
