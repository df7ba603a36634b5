"""Small file helpers shared by every sub-package: CSV and Markdown tables, file checksums."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path


def write_csv(target: Path | io.TextIOBase, rows: list[dict], fields: list[str] | None = None) -> None:
    """``rows`` as CSV to a path or an open text stream. The header is ``fields``, else the first row's keys
    (an empty file when there are neither)."""
    fields = fields or (list(rows[0]) if rows else [])
    if isinstance(target, io.TextIOBase):
        _write_rows(target, rows, fields)
        return
    with open(target, "w", newline="") as fh:
        _write_rows(fh, rows, fields)


def _write_rows(fh, rows: list[dict], fields: list[str]) -> None:
    if fields:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """A GitHub Markdown table as lines: ``header`` cells, then one line per row (cells as given, str()-ed)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
