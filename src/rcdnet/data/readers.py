"""Dataset readers: BUSI (Kaggle layout), BUS-UCLM, UDIAT Dataset B and users' own folder-per-class data (BrEaST:
``data.breast``; users' CSVs: ``data.user_csv``; one entry point for them all: ``data.sources``).

Every reader returns ``(samples, problems)``: files it cannot use are reported as
:class:`~rcdnet.data.samples.DataProblem` and skipped, never fatal. Pixel decoding happens later (in
preprocessing), where unreadable images are reported the same way.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from rcdnet.data.decode import IMAGE_SUFFIXES
from rcdnet.data.samples import CLASSES_2, CLASSES_3, DataProblem, Sample

DATA_ENV = "RCDNET_DATA"
MASK_RE = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?$")
_LABEL_ALIASES = {"benign": "benign", "0": "benign", "malignant": "malignant", "1": "malignant", "normal": "normal"}


class DatasetError(ValueError):
    """A dataset that cannot be read at all (missing folder, missing or malformed label file)."""


def resolve_data_root(data: str | os.PathLike | None = None) -> Path:
    """``--data`` if given, else ``$RCDNET_DATA``, else ``../shared/data`` or ``./shared/data`` if present."""
    if data:
        root = Path(data)
    elif os.environ.get(DATA_ENV):
        root = Path(os.environ[DATA_ENV])
    else:
        candidates = [Path("../shared/data"), Path("shared/data")]
        root = next((c for c in candidates if c.is_dir()), candidates[0])
    if not root.is_dir():
        raise DatasetError(
            f"{root}: data folder not found. Pass --data PATH or set {DATA_ENV}=PATH "
            "(the folder that holds BUSI/ and UDIAT_DatasetB/)."
        )
    return root.resolve()


def xlsx_rows(xlsx: Path, sheet: str) -> list[tuple]:
    """Every row of one sheet of a workbook (its first sheet if none is called ``sheet``), values only."""
    import openpyxl  # local import: only the spreadsheet readers need it

    try:
        wb = openpyxl.load_workbook(xlsx, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a bad file
        raise DatasetError(f"{xlsx}: not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from None
    try:
        ws = wb[sheet] if sheet in wb.sheetnames else wb.worksheets[0]
        return list(ws.iter_rows(values_only=True))
    finally:
        wb.close()


def normalise_label(raw: str, allowed: tuple[str, ...]) -> str | None:
    label = _LABEL_ALIASES.get(str(raw).strip().lower())
    return label if label in allowed else None


def _find(root: Path, *candidates: str) -> Path:
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    return root


def busi_dir(root: Path) -> Path:
    return _find(Path(root), "BUSI/Dataset_BUSI_with_GT", "Dataset_BUSI_with_GT")


def udiat_dir(root: Path) -> Path:
    return _find(Path(root), "UDIAT_DatasetB/BUS", "BUS")


def bus_uclm_dir(root: Path) -> Path:
    return _find(Path(root), "BUS-UCLM")


def read_busi(root: Path, classes: tuple[str, ...] = CLASSES_2) -> tuple[list[Sample], list[DataProblem]]:
    """Read ``Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (N).png`` with its ``_mask*.png`` files.

    ``root`` may be the data root, ``BUSI/`` or ``Dataset_BUSI_with_GT/`` itself."""
    base = busi_dir(root)
    samples: list[Sample] = []
    problems: list[DataProblem] = []
    found_any = False
    for cls in classes:
        folder = base / cls
        if not folder.is_dir():
            problems.append(DataProblem(str(folder), "class folder missing"))
            continue
        images: dict[str, Path] = {}
        masks: dict[str, list[tuple[int, Path]]] = {}
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                if f.is_file():
                    problems.append(DataProblem(str(f), "not an image file (skipped)"))
                continue
            m = MASK_RE.match(f.stem)
            if m:
                masks.setdefault(m["stem"], []).append((int(m["k"] or 0), f))
            else:
                images[f.stem] = f
        if not images:
            problems.append(DataProblem(str(folder), "class folder holds no images"))
            continue
        found_any = True
        for stem in sorted(set(masks) - set(images)):
            for _, f in masks[stem]:
                problems.append(DataProblem(str(f), "mask without an image"))
        for stem, f in images.items():
            mask_paths = tuple(p for _, p in sorted(masks.get(stem, [])))
            if not mask_paths:
                problems.append(DataProblem(str(f), "image without a mask (kept for classification)"))
            samples.append(Sample(path=f, label=cls, key=f"busi/{stem}", source="busi", mask_paths=mask_paths))
    if not found_any:
        raise DatasetError(f"{base}: no BUSI class folders with images ({', '.join(classes)}) found")
    samples.sort(key=lambda s: _natural_key(s.key))
    return samples, problems


def read_udiat(root: Path, classes: tuple[str, ...] = CLASSES_2) -> tuple[list[Sample], list[DataProblem]]:
    """Read UDIAT Dataset B: ``original/NNNNNN.png``, ``GT/NNNNNN.png`` masks, labels from ``DatasetB.xlsx``
    (sheet ``Hoja1``, columns Image / Type / Diagnosis)."""
    base = udiat_dir(root)
    xlsx = base / "DatasetB.xlsx"
    if not xlsx.is_file():
        raise DatasetError(f"{xlsx}: UDIAT label file missing (labels live only in DatasetB.xlsx)")
    rows = xlsx_rows(xlsx, "Hoja1")
    header = [str(c).strip().lower() if c is not None else "" for c in (rows[0] if rows else [])]
    if "image" not in header or "type" not in header:
        raise DatasetError(f"{xlsx}: expected columns 'Image' and 'Type' in the first row, found {rows[0] if rows else 'nothing'}")
    i_img, i_type = header.index("image"), header.index("type")
    i_diag = header.index("diagnosis") if "diagnosis" in header else None
    samples: list[Sample] = []
    problems: list[DataProblem] = []
    listed = set()
    for r_idx, row in enumerate(rows[1:], start=2):
        if row is None or row[i_img] is None:
            continue
        raw_id = row[i_img]
        image_id = f"{int(raw_id):06d}" if isinstance(raw_id, (int, float)) else str(raw_id).strip()
        listed.add(image_id)
        label = normalise_label(row[i_type] or "", CLASSES_3)
        if label is None:
            problems.append(DataProblem(f"{xlsx}:row {r_idx}", f"unknown label {row[i_type]!r} for image {image_id}"))
            continue
        if label not in classes:
            continue
        img = base / "original" / f"{image_id}.png"
        if not img.is_file():
            problems.append(DataProblem(str(img), "listed in DatasetB.xlsx but the image file is missing"))
            continue
        gt = base / "GT" / f"{image_id}.png"
        if not gt.is_file():
            problems.append(DataProblem(str(img), "image without a mask (kept for classification)"))
        diagnosis = str(row[i_diag]).strip() if i_diag is not None and row[i_diag] else ""
        samples.append(
            Sample(path=img, label=label, key=f"udiat/{image_id}", source="udiat",
                   mask_paths=(gt,) if gt.is_file() else (), extra={"diagnosis": diagnosis})
        )
    for f in sorted((base / "original").glob("*")):
        if f.stem not in listed and f.suffix.lower() in IMAGE_SUFFIXES:
            problems.append(DataProblem(str(f), "image not listed in DatasetB.xlsx (skipped: no label)"))
    if not samples:
        raise DatasetError(f"{base}: no labelled UDIAT images found")
    return samples, problems


def read_bus_uclm(root: Path, classes: tuple[str, ...] = CLASSES_2) -> tuple[list[Sample], list[DataProblem]]:
    """Read BUS-UCLM: ``images/<PATIENT>_<NNN>.png``, ``masks/<same name>`` (RGB: green benign, red malignant),
    labels from ``INFO.csv`` (semicolon-separated: Image;Resolution;Label;Doppler;Marks;...). The patient, the
    file-name prefix, becomes the sample's group, so that no patient spans two splits."""
    base = bus_uclm_dir(root)
    info = base / "INFO.csv"
    if not info.is_file():
        raise DatasetError(f"{info}: BUS-UCLM label file missing (labels live only in INFO.csv)")
    with open(info, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter=";")
        if not {"Image", "Label"} <= set(reader.fieldnames or []):
            raise DatasetError(f"{info}: expected semicolon-separated columns Image;Label;..., found "
                               f"{reader.fieldnames}")
        rows = list(reader)
    samples: list[Sample] = []
    problems: list[DataProblem] = []
    for line, r in enumerate(rows, start=2):
        name = (r["Image"] or "").strip()
        label = normalise_label(r["Label"] or "", CLASSES_3)
        if label is None:
            problems.append(DataProblem(f"{info}:line {line}", f"unknown label {r['Label']!r} for image {name}"))
            continue
        if label not in classes:
            continue
        img, mask = base / "images" / name, base / "masks" / name
        if not name or not img.is_file():
            problems.append(DataProblem(str(img), f"listed in INFO.csv (line {line}) but the image file is missing"))
            continue
        if not mask.is_file():
            problems.append(DataProblem(str(img), "image without a mask (kept for classification)"))
        yes = lambda v: (v or "").strip().lower() in ("y", "yes")  # noqa: E731  (one row spells Doppler "Y")
        samples.append(Sample(path=img, label=label, key=f"bus-uclm/{Path(name).stem}", source="bus-uclm",
                              mask_paths=(mask,) if mask.is_file() else (), group=name.rsplit("_", 1)[0],
                              extra={"doppler": yes(r.get("Doppler")), "marks": yes(r.get("Marks"))}))
    listed = {(r["Image"] or "").strip() for r in rows}
    for f in sorted((base / "images").glob("*")):
        if f.name not in listed and f.suffix.lower() in IMAGE_SUFFIXES:
            problems.append(DataProblem(str(f), "image not listed in INFO.csv (skipped: no label)"))
    if not samples:
        raise DatasetError(f"{base}: no labelled BUS-UCLM images found")
    samples.sort(key=lambda s: _natural_key(s.key))
    return samples, problems


def read_folder(root: Path, classes: tuple[str, ...] = CLASSES_2) -> tuple[list[Sample], list[DataProblem]]:
    """Users' data as one folder per class: ``root/benign/*.png``, ``root/malignant/*.png`` (or ``0/``, ``1/``).
    Files named ``*_mask*`` beside an image are taken as its masks."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found")
    samples: list[Sample] = []
    problems: list[DataProblem] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        label = normalise_label(sub.name, CLASSES_3)
        if label is None:
            problems.append(DataProblem(str(sub), f"folder name {sub.name!r} is not a class ({', '.join(classes)} or 0/1)"))
            continue
        if label not in classes:
            continue
        files = sorted(f for f in sub.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        masks = {}
        for f in files:
            m = MASK_RE.match(f.stem)
            if m:
                masks.setdefault(str(f.with_name(m["stem"])), []).append(f)
        images = [f for f in files if not MASK_RE.match(f.stem)]
        if not images:
            problems.append(DataProblem(str(sub), "class folder holds no images"))
        for f in images:
            mk = tuple(sorted(masks.get(str(f.with_suffix("")), [])))
            samples.append(Sample(path=f, label=label, key=str(f.relative_to(root)), source="folder", mask_paths=mk))
    if not samples:
        raise DatasetError(f"{root}: no images found in class folders ({', '.join(classes)})")
    return samples, problems


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
