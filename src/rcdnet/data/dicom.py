"""Ultrasound DICOM frames, decoded one at a time and checked before they are decoded.

A multi-frame file is never decoded whole: :func:`dicom_frames` yields one frame, then decodes the next, so memory
holds one decoded frame whatever the file holds. Compressed frames (JPEG, JPEG-LS, JPEG 2000) are checked from
their own headers before anything is decoded: a frame larger than the image size the DICOM header declares (a
64 x 64 header over a 20000 x 20000 JPEG) is refused, naming the file and the frame. Nothing from the header but
what decoding needs is read, so no patient data can reach an output.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rcdnet.data.decode import Frame, ImageReadError, _check_pixels, to_uint8_rgb

MAX_FRAMES = 2000  # frames read from one file at the most (a clip of minutes at 10-30 frames a second)
SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}  # JPEG / JPEG-LS frames


def frame_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) of a compressed frame from its own header (JPEG, JPEG-LS: SOF; JPEG 2000: SIZ), None where
    the codec does not say (RLE) or the header cannot be parsed."""
    if frame[:4] == b"\xff\x4f\xff\x51":  # JPEG 2000 codestream: SOC, then SIZ
        if len(frame) < 24:
            return None
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", frame[8:24])
        return xsiz - xo, ysiz - yo
    if frame[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(frame):
        if frame[pos] != 0xFF:
            return None
        marker, length = frame[pos + 1], struct.unpack(">H", frame[pos + 2:pos + 4])[0]
        if marker in SOF and pos + 9 <= len(frame):
            height, width = struct.unpack(">HH", frame[pos + 5:pos + 9])
            return width, height
        if marker == 0xD9 or marker == 0xDA:
            return None
        pos += 2 + length
    return None


def _has_preamble(path: Path, data: bytes | None) -> bool:
    if data is None:
        with open(path, "rb") as fh:
            data = fh.read(132)
    return data[128:132] == b"DICM"


def _header(path: Path, data: bytes | None):
    """(dataset, rows, columns, frames, photometric), or an :class:`ImageReadError` naming the file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data) if data is not None else str(path), force=True)
        rows, cols, frames = int(ds.Rows), int(ds.Columns), int(ds.get("NumberOfFrames", 1) or 1)
        has_pixels = "PixelData" in ds
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    except InvalidDicomError:
        raise ImageReadError(f"{path}: not a DICOM file (no DICOM header could be read)") from None
    except Exception as exc:  # noqa: BLE001 - a damaged header raises many types (BytesLengthException, ...)
        if isinstance(exc, AttributeError) and not _has_preamble(path, data):
            raise ImageReadError(f"{path}: not a DICOM file (no DICOM preamble, and no image size in what could be "
                                 "read as one)") from None
        what = "no image size (Rows / Columns)" if isinstance(exc, AttributeError) else f"{exc}"[:200]
        raise ImageReadError(f"{path}: damaged or incomplete DICOM header ({type(exc).__name__}: {what})") from None
    if not has_pixels:
        raise ImageReadError(f"{path}: DICOM file without pixel data")
    return ds, rows, cols, frames, photometric


def _check_compressed_frames(path: Path, ds, rows: int, cols: int, frames: int) -> None:
    """Every compressed frame's own size against the header's, before any frame is decoded."""
    from pydicom.encaps import generate_frames

    try:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is None or not syntax.is_compressed:
            return
        for i, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
            size = frame_size(frame)
            if size is not None and size[0] * size[1] > cols * rows:
                raise ImageReadError(f"{path}: frame {i} is {size[0]}x{size[1]} pixels but the DICOM header says "
                                     f"{cols}x{rows}: refused before decoding")
    except ImageReadError:
        raise
    except Exception:  # noqa: BLE001, S110 - a damaged frame table: the decoder reports it, naming the file
        return


def pixel_size_mm(ds) -> float | None:
    """Millimetres per pixel across the image: the first ultrasound region's PhysicalDeltaX where its units are
    centimetres (code 3), else PixelSpacing's column spacing; None where neither is there or believable (a positive
    number under 10 mm)."""
    candidates = []
    try:
        region = ds.SequenceOfUltrasoundRegions[0]
        if int(region.PhysicalUnitsXDirection) == 3:
            candidates.append(10.0 * float(region.PhysicalDeltaX))
    except Exception:  # noqa: BLE001, S110 - absent or damaged: fall through to PixelSpacing
        pass
    try:
        candidates.append(float(ds.PixelSpacing[1]))
    except Exception:  # noqa: BLE001, S110
        pass
    for mm in candidates:
        if np.isfinite(mm) and 0 < mm < 10:
            return mm
    return None


def dicom_frames(path: Path, data: bytes | None, max_frames: int | None, max_pixels: int | None) -> Iterator[Frame]:
    """(H, W, 3) uint8 RGB frames of a DICOM file (``data``: its bytes), decoded one at a time; at most
    ``max_frames`` (else :data:`MAX_FRAMES`)."""
    from pydicom.pixels import apply_color_lut, iter_pixels

    ds, rows, cols, frames, photometric = _header(path, data)
    _check_pixels(path, cols, rows, frames, limit=max_pixels)
    _check_compressed_frames(path, ds, rows, cols, frames)
    limit = min(max_frames or MAX_FRAMES, MAX_FRAMES)
    pixel_mm = pixel_size_mm(ds)
    try:
        for i, pixels in enumerate(iter_pixels(ds)):  # YBR colour comes back as RGB
            if i >= limit:
                break
            if pixels.shape[0] != rows or pixels.shape[1] != cols:
                raise ImageReadError(f"{path}: frame {i} decoded to {pixels.shape[1]}x{pixels.shape[0]} pixels but "
                                     f"the header says {cols}x{rows}")
            if photometric == "PALETTE COLOR":
                pixels = apply_color_lut(pixels, ds)
            yield Frame(to_uint8_rgb(np.asarray(pixels), photometric), index=i, pixel_mm=pixel_mm)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types (missing plugin, corrupt stream)
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "unknown transfer syntax")
        raise ImageReadError(f"{path}: DICOM pixel data could not be decoded ({name}: {type(exc).__name__}: "
                             f"{exc})") from None
