"""Which images a command on a trained model works on: a named dataset (``val``: the run's own validation split,
``<source>-val`` its part from one training source, e.g. ``busi-val``; ``busi``, ``bus-uclm``, ``breast``, ``udiat``), a user's
CSV or class folders, loose files and folders, or whatever a data root holds (``rcdnet audit``)."""

from __future__ import annotations

import glob
import re
from pathlib import Path

from rcdnet.data.breast import IMAGES as BREAST_IMAGES
from rcdnet.data.breast import breast_dir, read_breast
from rcdnet.data.decode import DICOM_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES
from rcdnet.data.readers import (
    MASK_RE,
    DatasetError,
    bus_uclm_dir,
    busi_dir,
    read_bus_uclm,
    read_busi,
    read_folder,
    read_udiat,
    udiat_dir,
)
from rcdnet.data.samples import CLASSES_3, DataProblem, Sample
from rcdnet.data.sources import READERS, load_dataset, load_sources
from rcdnet.data.user_csv import read_csv

VALIDATION = "val"
BREAST_MASK_RE = re.compile(r"_(tumor|other\d+)$")  # BrEaST's lesion and other-structure masks


def named_dataset(name: str, data_root: str | Path | None, model) -> tuple[list[Sample], list[DataProblem]]:
    """(samples, problems) of a named dataset for ``model`` (a predictor: its classes, validation keys and training
    sources). ``val`` is the run's validation split, ``<source>-val`` its images from one training source (``busi-val``
    of a BUSI-only run is the whole split); any other name is a dataset read by ``load_dataset``."""
    classes = tuple(model.classes)
    if name != VALIDATION and not name.endswith("-val"):
        return load_dataset(name, data_root, classes=classes)
    if not model.val_keys:
        raise DatasetError(f"{model.source}: holds no validation split ({name} needs a run's own checkpoint)")
    samples, problems = load_sources(model.training_sources, data_root, classes)
    val = set(model.val_keys)
    samples = [s for s in samples if s.key in val]
    if name != VALIDATION:
        source = name[:-len("-val")]
        samples = [s for s in samples if s.source == source]
        if not samples:
            raise DatasetError(f"{name}: {model.source} has no validation images from source {source!r} (its "
                               f"training sources: {', '.join(model.training_sources)})")
    return samples, problems


def from_training_sources(name: str, model) -> bool:
    """Whether the named set is the model's validation split, part of it, or one of its training sources (not an
    external set, so not counted in the ledger of external scorings)."""
    return name == VALIDATION or name.endswith("-val") or name in getattr(model, "training_sources", ())


def dataset_names(model) -> list[str]:
    """The names ``--dataset`` accepts for ``model``: ``val``, one ``<source>-val`` per training source, and every
    named dataset."""
    sources = [s for s in getattr(model, "training_sources", ()) if s in READERS]
    return [VALIDATION] + [f"{s}-val" for s in sources] + list(READERS)


def chosen_dataset(model, name: str | None, *, csv: str | None = None, folder: str | None = None,
                   data_root: str | Path | None = None) -> tuple[str, list[Sample], list[DataProblem]]:
    """(name, samples, problems) for ``--csv``, ``--folder`` or a named dataset, labelled with ``model``'s classes
    (a predictor: its validation keys and training sources give ``val``)."""
    if csv or folder:
        samples, problems = load_dataset(csv_path=csv, folder=folder, classes=tuple(model.classes))
        return Path(csv or folder).stem, samples, problems
    return (name, *named_dataset(name, data_root, model))


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given (their type is read from their content later); folders searched recursively for images,
    DICOM and video by file name (lesion masks left out). A folder with none of them is an error."""
    known = IMAGE_SUFFIXES | DICOM_SUFFIXES | VIDEO_SUFFIXES
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in known and "_mask" not in f.stem
                           and not BREAST_MASK_RE.search(f.stem))
            if not found:
                raise ValueError(f"{p}: no images found (looked for {', '.join(sorted(known))} files in it and "
                                 "its sub-folders)")
            files += found
        else:
            files.append(p)
    return files


def masks_beside(image: Path) -> tuple[Path, ...]:
    """Lesion masks of a loose image file: BUSI-style ``<stem>_mask*.<ext>`` beside it, BrEaST-style
    ``<stem>_tumor.png`` beside it, or UDIAT-style ``../GT/<name>`` when the image sits in an ``original/`` folder."""
    image = Path(image)
    found = sorted(f for f in image.parent.glob(f"{glob.escape(image.stem)}_mask*")
                   if f.suffix.lower() in IMAGE_SUFFIXES and (m := MASK_RE.match(f.stem)) and m["stem"] == image.stem)
    gt, tumor = image.parent.parent / "GT" / image.name, image.with_name(f"{image.stem}_tumor.png")
    if not found and image.parent.name == "original" and gt.is_file():
        found = [gt]
    if not found and tumor.is_file():
        found = [tumor]
    return tuple(found)


def loose_files(inputs: list[str | Path]) -> list[Sample]:
    """Unlabelled samples for loose files and folders, with the lesion masks found beside each image."""
    return [Sample(path=f, label="", key=str(f), source="file", mask_paths=masks_beside(f))
            for f in expand_inputs(inputs)]


def detect_datasets(target: Path) -> dict[str, tuple[list[Sample], list[DataProblem]]]:
    """Every dataset at ``target``: a CSV file, a folder per class, or a data root holding BUSI, BUS-UCLM, BrEaST and / or
    UDIAT (else read as a folder per class). All three classes are read; each sample's ``source`` is its dataset."""
    target = Path(target)
    is_class_folder = ((target / "benign").is_dir() and busi_dir(target) == target and udiat_dir(target) == target
                       and bus_uclm_dir(target) == target and not (breast_dir(target) / BREAST_IMAGES).is_dir())
    if target.is_file():
        datasets = {"csv": read_csv(target, CLASSES_3)}
    elif is_class_folder:
        datasets = {"folder": read_folder(target, CLASSES_3)}
    else:
        datasets = {}
        if (busi_dir(target) / "benign").is_dir() or (busi_dir(target) / "malignant").is_dir():
            datasets["busi"] = read_busi(target, CLASSES_3)
        if (bus_uclm_dir(target) / "INFO.csv").is_file():
            datasets["bus-uclm"] = read_bus_uclm(target, CLASSES_3)
        if (breast_dir(target) / BREAST_IMAGES).is_dir():
            datasets["breast"] = read_breast(target, CLASSES_3)
        if (udiat_dir(target) / "original").is_dir():
            datasets["udiat"] = read_udiat(target, CLASSES_3)
        if not datasets:
            datasets["folder"] = read_folder(target, CLASSES_3)
    for name, (samples, _) in datasets.items():
        for s in samples:
            s.source = name
    return datasets
