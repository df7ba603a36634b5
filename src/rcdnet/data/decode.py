"""Every file and upload becomes pixels here: images, ultrasound DICOM (single- or multi-frame) and video clips.

One function for all commands and the service: :func:`read_frames` yields (H, W, 3) uint8 RGB frames of a file on
disk or of uploaded bytes; :func:`read_image` is the single-picture case (datasets, CSVs, heat maps).
- The type comes from the content (DICOM preamble, video container signatures, what PIL recognises), never from
  the file name alone; a name only helps for DICOM files written without their 128-byte preamble.
- Files are hostile until checked: a frame larger than :data:`MAX_PIXELS` (an image bomb: a few hundred KB that
  decode to gigabytes) is refused from its header, before any pixel is decoded, and so is a DICOM whose frames
  together exceed :data:`FILE_FACTOR` times that. Every problem is an :class:`ImageReadError` naming the file.
- Nothing from a DICOM header is returned except what decoding the pixels needs, so no patient data can reach
  outputs or logs.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from rcdnet.data.png import missing_png_rows

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DICOM_SUFFIXES = {".dcm", ".dicom"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg"}
PIXELS_ENV = "RCDNET_MAX_PIXELS"
# Ultrasound frames are 0.3-2 megapixels (4K screen captures 8.3); 40 MP leaves room for stitched panoramas and
# bounds one decoded frame to 120 MB of RGB. A whole DICOM may hold 10 such frames' worth of pixels.
MAX_PIXELS = int(os.environ.get(PIXELS_ENV) or 40_000_000)
FILE_FACTOR = 10  # a whole file (a DICOM's frames together) may hold this many pictures' worth of pixels
MIN_SIDE = 8
Image.MAX_IMAGE_PIXELS = None  # PIL's own warning threshold is replaced by the explicit check below


class ImageReadError(ValueError):
    """An image, DICOM, video or mask that cannot be used; the message names the file and the problem."""


class TooManyPixels(ImageReadError):
    """A picture (or a DICOM's frames together) over the pixel limit: refused before decoding."""


class IncompleteVideo(ImageReadError):
    """Raised by :func:`read_frames` after the frames it could decode were yielded: the clip ended before its
    container said it would (a truncated file) or decoding failed midway. Callers keep what they got and say so."""


@dataclasses.dataclass
class Frame:
    """One picture to classify: ``index`` within its file (0 for a still image), ``time`` in seconds for video,
    ``pixel_mm`` the width of a pixel in millimetres where the file says (DICOM)."""

    rgb: np.ndarray
    index: int = 0
    time: float | None = None
    pixel_mm: float | None = None


def _check_pixels(path: Path, w: int, h: int, frames: int = 1, limit: int | None = None) -> None:
    limit = limit or MAX_PIXELS
    if w * h > limit:
        raise TooManyPixels(f"{path}: {w}x{h} pixels ({w * h / 1e6:.0f} MP) is over the limit of {limit / 1e6:g} MP "
                            f"per image (set {PIXELS_ENV} to change it)")
    if frames * w * h > FILE_FACTOR * limit:
        raise TooManyPixels(f"{path}: {frames} frames of {w}x{h} pixels are over the limit of "
                            f"{FILE_FACTOR * limit / 1e6:g} MP "
                            f"per file (set {PIXELS_ENV} to change it)")
    if min(w, h) < MIN_SIDE:
        raise ImageReadError(f"{path}: image too small ({w}x{h}; at least {MIN_SIDE}x{MIN_SIDE} pixels)")


def _video_signature(head: bytes) -> bool:
    return (head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide") or head[:4] == b"\x1a\x45\xdf\xa3"
            or (head[:4] == b"RIFF" and head[8:12] == b"AVI ") or head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"))


def kind_of(path: Path, data: bytes | None = None) -> str:
    """'dicom', 'video' or 'image' from the file's first bytes (a DICOM without its preamble: from the name)."""
    try:
        if data is not None:
            head = data[:132]
        else:
            with open(path, "rb") as fh:
                head = fh.read(132)
    except OSError:
        head = b""
    if head[128:132] == b"DICM":
        return "dicom"
    if _video_signature(head):
        return "video"
    if Path(path).suffix.lower() in DICOM_SUFFIXES and not head.startswith((b"\x89PNG", b"\xff\xd8")):
        return "dicom"
    return "image"


def _check_file(path: Path) -> None:
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            raise ImageReadError(f"{path}: symbolic link loop") from None
        if path.is_symlink():
            raise ImageReadError(f"{path}: broken symbolic link (its target does not exist)") from None
        raise ImageReadError(f"{path}: file does not exist") from None
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    if st.st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")


def read_frames(path: str | Path, data: bytes | None = None, max_frames: int | None = None,
                max_pixels: int | None = None) -> Iterator[Frame]:
    """Frames of an image, DICOM or video file (``data``: its bytes, when it was uploaded rather than on disk).

    Raises :class:`ImageReadError` naming the file for anything that cannot be decoded, :class:`TooManyPixels`
    for a picture over ``max_pixels`` (default :data:`MAX_PIXELS`)."""
    path = Path(path)
    if data is None:
        _check_file(path)
    elif not data:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    kind = kind_of(path, data)
    if kind == "dicom":
        from rcdnet.data.dicom import dicom_frames  # (it uses this module's checks and types)

        yield from dicom_frames(path, data, max_frames, max_pixels)
    elif kind == "video":
        yield from _video_frames(path, data, max_frames, max_pixels)
    else:
        yield Frame(_still(path, data, max_pixels))


def read_image(path: str | Path, data: bytes | None = None, max_pixels: int | None = None) -> np.ndarray:
    """A single picture, (H, W, 3) uint8 RGB: an image file or a single-frame DICOM. Grayscale, palette, 16-bit
    and RGBA are all accepted (8-bit grayscale and three identical RGB channels give the same array)."""
    frames = read_frames(path, data, max_frames=2, max_pixels=max_pixels)
    first = next(frames)
    if next(frames, None) is not None:
        raise ImageReadError(f"{path}: holds several frames (a clip); one picture is needed here "
                             "(`rcdnet predict` classifies clips frame by frame)")
    return first.rgb


def _still(path: Path, data: bytes | None, max_pixels: int | None) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(data) if data is not None else path)
        _check_pixels(path, *img.size, limit=max_pixels)  # from the header, before decoding
        img.load()  # forces a full decode: catches truncated files
        if img.format == "PNG" and (short := missing_png_rows(data if data is not None else path.read_bytes())):
            raise ImageReadError(f"{path}: truncated PNG: it {short} (PIL would pad the rest with black)")
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image, DICOM or video file that can be read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, ImageReadError):
            raise
        raise ImageReadError(f"{path}: corrupt or truncated image ({exc})") from None
    if img.mode in ("I;16", "I;16B", "I;16L"):  # 16-bit: the full range scaled to 8 bits, never stretched (a
        g = np.asarray(img, np.uint32)          # picture must not brighten with its own contrast)
        if g.max() < 4096:
            raise ImageReadError(f"{path}: 16-bit pixels that use only {int(g.max()).bit_length()} bits: their scale "
                                 "is unknown (12-bit data?); save the picture as 8-bit")
        return np.repeat(((g * 255 + 32767) // 65535).astype(np.uint8)[..., None], 3, axis=2)
    if img.mode in ("I", "F"):
        raise ImageReadError(f"{path}: {'32-bit integer' if img.mode == 'I' else 'floating-point'} pixels: no "
                             "scale to map them to the 8-bit images the model was trained on; save it as 8-bit")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        return over_black(np.asarray(img.convert("RGBA")))
    return np.asarray(img.convert("RGB"))


def over_black(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA -> (H, W, 3) uint8 RGB composited onto black: what lies under transparent pixels (often
    white or black at random, as in BrEaST's released files) never reaches the model, and a mask is a lesion only
    where it is opaque. Fully opaque images are unchanged."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    return ((rgb.astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)


def to_uint8_rgb(arr: np.ndarray, photometric: str = "MONOCHROME2") -> np.ndarray:
    """A decoded frame (H, W) or (H, W, 3), any bit depth -> (H, W, 3) uint8 RGB (other depths stretched to 0-255)."""
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


def _video_frames(path: Path, data: bytes | None, max_frames: int | None, max_pixels: int | None) -> Iterator[Frame]:
    import av

    try:
        container = av.open(io.BytesIO(data) if data is not None else str(path))
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types for a damaged container
        raise ImageReadError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from None
    with container:
        if not container.streams.video:
            raise ImageReadError(f"{path}: file holds no video stream")
        try:
            stream = container.streams.video[0]
            codec = stream.codec_context
            width, height, declared = codec.width, codec.height, stream.frames or 0  # 0: the container does not say
        except Exception as exc:  # noqa: BLE001 - a damaged stream header (no codec context, ...)
            raise ImageReadError(f"{path}: damaged video stream header ({type(exc).__name__})") from None
        _check_pixels(path, width or MIN_SIDE, height or MIN_SIDE, limit=max_pixels)
        n, stopped = 0, None
        try:
            for frame in container.decode(stream):
                if max_frames is not None and n >= max_frames:
                    return
                _check_pixels(path, frame.width, frame.height, limit=max_pixels)
                t = float(frame.pts * stream.time_base) if frame.pts is not None else None
                yield Frame(frame.to_ndarray(format="rgb24"), index=n, time=t)
                n += 1
        except ImageReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - FFmpegError, and what a damaged stream makes PyAV raise
            if n == 0:
                raise ImageReadError(f"{path}: video could not be decoded ({exc})") from None
            stopped = f"decoding failed: {exc}"
        if n == 0:
            raise ImageReadError(f"{path}: video holds no frames")
        if (stopped or declared > n) and (max_frames is None or n < max_frames):
            of = f" of the {declared} its container declares" if declared > n else ""
            raise IncompleteVideo(f"{path}: video ended after {n} frames{of} "
                                  f"({stopped or 'file truncated?'}); only those {n} frames were used")


def read_mask(paths: tuple[Path, ...] | list[Path], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read and merge (logical OR) one or more lesion masks into a boolean (H, W) array.

    ``shape`` is the image's (H, W); a mask of another size is an error naming the file."""
    merged = None
    for p in paths:
        rgb = read_image(p)
        arr = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]) > 127  # far faster than .max(axis=2)
        if shape is not None and arr.shape != tuple(shape):
            raise ImageReadError(f"{p}: mask is {arr.shape[1]}x{arr.shape[0]} but its image is {shape[1]}x{shape[0]}")
        if merged is not None and arr.shape != merged.shape:
            raise ImageReadError(f"{p}: mask size differs from the image's other masks")
        merged = arr if merged is None else (merged | arr)
    if merged is None:
        raise ImageReadError("no mask files given")
    return merged


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luminance."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
