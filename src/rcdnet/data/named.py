"""Which images a command on a trained model works on: a named dataset (``busi-val``: the run's own validation
split; ``busi``, ``udiat``), a user's CSV or class folders, loose files and folders, or whatever a data root holds
(``rcdnet audit``)."""

from __future__ import annotations

from pathlib import Path

from rcdnet.data.decode import DICOM_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES
from rcdnet.data.readers import (
    busi_dir,
    load_dataset,
    masks_beside,
    read_busi,
    read_csv,
    read_folder,
    read_udiat,
    udiat_dir,
)
from rcdnet.data.samples import CLASSES_3, DataProblem, Sample

VALIDATION = "busi-val"


def named_dataset(name: str, data_root: str | Path | None, classes: tuple[str, ...], val_keys: list[str],
                  training_dataset: str, source: str = "the model") -> tuple[list[Sample], list[DataProblem]]:
    """(samples, problems) of a named dataset: ``busi-val`` is the run's validation split (``val_keys`` of its
    ``training_dataset``), any other name a dataset read by ``load_dataset``."""
    if name != VALIDATION:
        return load_dataset(name, data_root, classes=classes)
    if not val_keys:
        raise ValueError(f"{source}: holds no validation split (busi-val needs a run's own checkpoint)")
    samples, problems = load_dataset(training_dataset, data_root, classes=classes)
    val = set(val_keys)
    return [s for s in samples if s.key in val], problems


def chosen_dataset(model, name: str | None, *, csv: str | None = None, folder: str | None = None,
                   data_root: str | Path | None = None) -> tuple[str, list[Sample], list[DataProblem]]:
    """(name, samples, problems) for ``--csv``, ``--folder`` or a named dataset, labelled with ``model``'s classes
    (a predictor: its ``val_keys`` and training dataset give ``busi-val``)."""
    classes = tuple(model.classes)
    if csv or folder:
        samples, problems = load_dataset(csv_path=csv, folder=folder, classes=classes)
        return Path(csv or folder).stem, samples, problems
    return (name, *named_dataset(name, data_root, classes, model.val_keys, model.training_dataset, model.source))


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given (their type is read from their content later); folders searched recursively for images,
    DICOM and video by file name (lesion masks left out). A folder with none of them is an error."""
    known = IMAGE_SUFFIXES | DICOM_SUFFIXES | VIDEO_SUFFIXES
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in known and "_mask" not in f.stem)
            if not found:
                raise ValueError(f"{p}: no images found (looked for {', '.join(sorted(known))} files in it and "
                                 "its sub-folders)")
            files += found
        else:
            files.append(p)
    return files


def loose_files(inputs: list[str | Path]) -> list[Sample]:
    """Unlabelled samples for loose files and folders, with the lesion masks found beside each image."""
    return [Sample(path=f, label="", key=str(f), source="file", mask_paths=masks_beside(f))
            for f in expand_inputs(inputs)]


def detect_datasets(target: Path) -> dict[str, tuple[list[Sample], list[DataProblem]]]:
    """Every dataset at ``target``: a CSV file, a folder per class, or a data root holding BUSI and / or UDIAT
    (else read as a folder per class). All three classes are read; each sample's ``source`` is its dataset."""
    target = Path(target)
    is_class_folder = (target / "benign").is_dir() and busi_dir(target) == target and udiat_dir(target) == target
    if target.is_file():
        datasets = {"csv": read_csv(target, CLASSES_3)}
    elif is_class_folder:
        datasets = {"folder": read_folder(target, CLASSES_3)}
    else:
        datasets = {}
        if (busi_dir(target) / "benign").is_dir() or (busi_dir(target) / "malignant").is_dir():
            datasets["busi"] = read_busi(target, CLASSES_3)
        if (udiat_dir(target) / "original").is_dir():
            datasets["udiat"] = read_udiat(target, CLASSES_3)
        if not datasets:
            datasets["folder"] = read_folder(target, CLASSES_3)
    for name, (samples, _) in datasets.items():
        for s in samples:
            s.source = name
    return datasets
