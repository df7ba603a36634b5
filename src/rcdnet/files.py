"""Small file helpers shared by every sub-package: CSV and Markdown tables, file checksums, output checks."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sys
from pathlib import Path


def write_csv(target: Path | io.TextIOBase, rows: list[dict], fields: list[str] | None = None) -> None:
    """``rows`` as CSV to a path or an open text stream. The header is ``fields``, else every row's keys in the
    order first seen (a row without one leaves its cell empty; an empty file when there are none)."""
    fields = fields or columns(rows)
    if isinstance(target, io.TextIOBase):
        _write_rows(target, rows, fields)
        return
    _atomic(Path(target), lambda fh: _write_rows(fh, rows, fields))


def columns(rows: list[dict]) -> list[str]:
    """The keys of all ``rows``, in the order they first appear (rows of one table may differ: a lesion number, a
    box only where one was used)."""
    return list(dict.fromkeys(k for r in rows for k in r))


def _atomic(path: Path, write) -> None:
    """``write(fh)`` into a temporary file beside ``path``, then renamed over it: a full disk or a kill never leaves
    a truncated file behind, and the error names the file."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # as an ordinary new file (mkstemp makes it owner-only)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, f"{path}: could not be written ({exc.strerror})") from None


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


def writable_dir(folder: str | Path) -> Path:
    """``folder``, created with its parents if missing, after checking that files can be written in it: call
    before the work, so that a read-only or impossible output never costs the results."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".rcdnet-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"{folder}: cannot write output there ({exc.strerror or exc}); choose another --out") from None
    return folder


def writable_file(path: str | Path) -> Path:
    """``path``, after checking that its folder (created if missing) takes files and that it is not a folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; --out takes a file name here")
    writable_dir(path.parent)
    return path


def print_table(rows: list[dict], file=None) -> None:
    """``rows`` as aligned plain-text columns (every row's keys as the header, :func:`columns`) on ``file``
    (stdout)."""
    file = file or sys.stdout
    if not rows:
        return
    cols = columns(rows)
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols), file=file)
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols), file=file)


def write_json(path: str | Path, data) -> Path:
    """``data`` as indented JSON, written atomically (see :func:`_atomic`)."""
    import json

    _atomic(Path(path), lambda fh: fh.write(json.dumps(data, indent=1)))
    return Path(path)
