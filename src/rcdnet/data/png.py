"""Whether a PNG holds the pixels its header promises. PIL pads a PNG whose compressed data end early with black
and says nothing, so a file cut short (or crafted to lie) would be classified as if the black were tissue."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
PIECE = 1 << 20  # decompressed bytes counted at a time: memory stays small whatever the file


def missing_png_rows(raw: bytes) -> str | None:
    """None when ``raw`` is not a non-interlaced PNG or its image data hold every row the header promises; else
    what is missing, e.g. ``"holds 100 of the 4000 rows its header promises"``."""
    if raw[:8] != SIGNATURE:
        return None
    pos, header, inflater, got = 8, None, zlib.decompressobj(), 0
    try:
        while pos + 8 <= len(raw):
            n, kind = struct.unpack(">I4s", raw[pos:pos + 8])
            body, pos = raw[pos + 8:pos + 8 + n], pos + 12 + n
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", body[:13])
            elif kind == b"IDAT":
                chunk = inflater.decompress(body, PIECE)
                while chunk:
                    got += len(chunk)
                    chunk = inflater.decompress(inflater.unconsumed_tail, PIECE) if inflater.unconsumed_tail else b""
            elif kind == b"IEND":
                break
    except (struct.error, zlib.error):
        return None  # a damaged stream is PIL's to report
    if header is None or header[6] != 0 or header[3] not in CHANNELS:
        return None  # interlaced (rows are not stored in order) or not a colour type this check knows
    width, height, depth, ctype = header[:4]
    row = 1 + (width * depth * CHANNELS[ctype] + 7) // 8
    if got >= height * row:
        return None
    return f"holds {got // row} of the {height} rows its header promises"
