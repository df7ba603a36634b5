"""Users' data as a CSV: ``path,label[,group][,x0,y0,x1,y1]`` (:func:`read_csv`)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from rcdnet.data.boxes import BoxError, parse_box
from rcdnet.data.readers import DatasetError, normalise_label
from rcdnet.data.samples import CLASSES_2, DataProblem, Sample
from rcdnet.files import file_sha256

BOX_COLUMNS = ("x0", "y0", "x1", "y1")


def same_file_groups(samples: list[Sample]) -> None:
    """Rows whose files hold the same bytes are one case: without a group of their own, they share one (so that
    intervals resample them together, never as independent patients), and each is marked ``extra["repeats_file"]``
    for the commands to say so."""
    by_path: dict[Path, str] = {}  # a file listed many times is read once
    for s in samples:
        if s.path.resolve() not in by_path:
            by_path[s.path.resolve()] = file_sha256(s.path)
    digest = [by_path[s.path.resolve()] for s in samples]
    counts = Counter(digest)
    for s, d in zip(samples, digest):
        if counts[d] > 1:
            s.group = s.group or f"same-file:{d[:16]}"
            s.extra["repeats_file"] = True


def read_csv(csv_path: Path, classes: tuple[str, ...] = CLASSES_2) -> tuple[list[Sample], list[DataProblem]]:
    """Users' data as a CSV with columns ``path,label[,group][,x0,y0,x1,y1]`` (labels benign/malignant or 0/1; the
    optional lesion box in pixels, for region-of-interest models); relative paths are resolved against the CSV's own
    folder. A relative path that leaves that folder (``../x.png``) is read, and marked
    (``extra["outside_csv_folder"]``) so that commands can say so. A malformed box skips its row, named."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: CSV file not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            if "path" not in fields or "label" not in fields:
                raise DatasetError(f"{csv_path}: needs a header with columns path,label[,group]; found "
                                   f"{reader.fieldnames}")
            rows = [{k.strip().lower(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{csv_path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise DatasetError(f"{csv_path}: not a readable CSV ({exc})") from None
    samples: list[Sample] = []
    problems: list[DataProblem] = []
    for line, r in enumerate(rows, start=2):
        label = normalise_label(r["label"], classes)
        where = f"{csv_path}:line {line}"
        if label is None:
            problems.append(DataProblem(where, f"unknown label {r['label']!r} (expected {', '.join(classes)} or 0/1)"))
            continue
        p = Path(r["path"])
        outside = not p.is_absolute() and ".." in p.parts and not (csv_path.parent / p).resolve().is_relative_to(
            csv_path.parent.resolve())
        p = p if p.is_absolute() else csv_path.parent / p
        if not p.is_file():
            problems.append(DataProblem(str(p), f"file missing ({where})"))
            continue
        coords = [r.get(k, "") for k in BOX_COLUMNS]
        try:
            box = parse_box(",".join(coords), where) if any(coords) else None
        except BoxError as exc:
            problems.append(DataProblem(str(p), str(exc)))
            continue
        samples.append(Sample(path=p, label=label, key=r["path"], source="csv", group=r.get("group") or None,
                              box=box, extra={"outside_csv_folder": True} if outside else {}))
    if not samples:
        raise DatasetError(f"{csv_path}: no usable rows")
    same_file_groups(samples)
    return samples, problems
