"""BrEaST-Lesions-USG (Pawłowska et al., Scientific Data 11:148, 2024; Poland, several scanners; one image per patient).

    BrEaST/BrEaST-Lesions_USG-images_and_masks/caseNNN.png, caseNNN_tumor.png, caseNNN_otherK.png
    BrEaST/BrEaST-Lesions-USG-clinical-data-*.xlsx   (labels: column Classification; one row per image)

Only the label, the lesion mask (``*_tumor.png``: white and opaque where the lesion is; ``*_otherK.png`` outline
other structures and are not lesion masks) and the pixel size are read. The spreadsheet's BI-RADS and the
radiologist's descriptors nearly give the answer away and are never read. Images come as RGBA (some with real
transparency), RGB or grayscale; :func:`rcdnet.data.decode.read_image` gives all three the same pixels (RGBA
composited onto black).
"""

from __future__ import annotations

from pathlib import Path

from rcdnet.data.decode import IMAGE_SUFFIXES
from rcdnet.data.readers import DatasetError, normalise_label, xlsx_rows
from rcdnet.data.samples import CLASSES_2, CLASSES_3, DataProblem, Sample

SHEET = "BrEaST-Lesions-USG clinical dat"
IMAGES = "BrEaST-Lesions_USG-images_and_masks"
CM_TO_MM = 10.0  # the spreadsheet's data dictionary: "pixel size of the image in centimeters"


def breast_dir(root: Path) -> Path:
    """The folder that holds the spreadsheet and the image folder: ``root/BrEaST`` or ``root`` itself."""
    root = Path(root)
    return root / "BrEaST" if (root / "BrEaST" / IMAGES).is_dir() else root


def _spreadsheet(base: Path) -> Path:
    found = sorted(base.glob("BrEaST-Lesions-USG-clinical-data*.xlsx"))
    if not found:
        raise DatasetError(f"{base}: BrEaST label file missing (labels live only in "
                           "BrEaST-Lesions-USG-clinical-data-*.xlsx)")
    return found[-1]


def _pixel_size_mm(raw) -> float | None:
    try:
        v = float(raw)
    except (TypeError, ValueError):
        return None
    return v * CM_TO_MM if v > 0 else None


def read_breast(root: Path, classes: tuple[str, ...] = CLASSES_2) -> tuple[list[Sample], list[DataProblem]]:
    """Read BrEaST: one sample per labelled image of ``classes``, its ``*_tumor.png`` as the lesion mask, the patient
    (one per image) as its group, and ``extra["pixel_size_mm"]`` (millimetres per pixel) and ``extra["verification"]``
    (biopsy or follow-up)."""
    base = breast_dir(root)
    folder = base / IMAGES
    if not folder.is_dir():
        raise DatasetError(f"{folder}: BrEaST image folder not found")
    xlsx = _spreadsheet(base)
    rows = xlsx_rows(xlsx, SHEET)
    header = [str(c).strip() if c is not None else "" for c in (rows[0] if rows else [])]
    need = ("Image_filename", "Classification")
    if not all(n in header for n in need):
        raise DatasetError(f"{xlsx}: expected columns {', '.join(need)} in the first row, found {header}")
    col = {n: header.index(n) for n in ("Image_filename", "Mask_tumor_filename", "Classification", "Pixel_size",
                                        "Verification") if n in header}
    get = lambda row, n: row[col[n]] if n in col and col[n] < len(row) else None  # noqa: E731
    samples: list[Sample] = []
    problems: list[DataProblem] = []
    listed = set()
    for r_idx, row in enumerate(rows[1:], start=2):
        name = str(get(row, "Image_filename") or "").strip()
        if not name:
            continue
        listed.add(name)
        label = normalise_label(get(row, "Classification") or "", CLASSES_3)
        if label is None:
            problems.append(DataProblem(f"{xlsx}:row {r_idx}", f"unknown label {get(row, 'Classification')!r} for "
                                                               f"image {name}"))
            continue
        if label not in classes:
            continue
        img = folder / name
        if not img.is_file():
            problems.append(DataProblem(str(img), f"listed in {xlsx.name} (row {r_idx}) but the image file is missing"))
            continue
        mask = folder / str(get(row, "Mask_tumor_filename") or f"{img.stem}_tumor.png").strip()
        if not mask.is_file():
            problems.append(DataProblem(str(img), "image without a lesion mask (kept for classification)"))
        pixel_mm = _pixel_size_mm(get(row, "Pixel_size"))
        if pixel_mm is None:
            problems.append(DataProblem(str(img), f"no usable Pixel_size ({get(row, 'Pixel_size')!r}): sizes in pixels"))
        samples.append(Sample(path=img, label=label, key=f"breast/{img.stem}", source="breast",
                              mask_paths=(mask,) if mask.is_file() else (), group=img.stem,
                              extra={"pixel_size_mm": pixel_mm, "verification": str(get(row, "Verification") or "")}))
    for f in sorted(folder.glob("case*")):
        if f.suffix.lower() in IMAGE_SUFFIXES and "_" not in f.stem and f.name not in listed:
            problems.append(DataProblem(str(f), f"image not listed in {xlsx.name} (skipped: no label)"))
    if not samples:
        raise DatasetError(f"{base}: no labelled BrEaST images found")
    samples.sort(key=lambda s: s.key)
    return samples, problems
