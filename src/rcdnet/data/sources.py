"""One entry point for every reader (:func:`load_dataset`: a named dataset, a CSV or a class folder) and the training
pool of several sources (:func:`load_sources`, ``data.sources``)."""

from __future__ import annotations

from pathlib import Path

from rcdnet.data.breast import read_breast
from rcdnet.data.readers import (
    DatasetError,
    read_bus_uclm,
    read_busi,
    read_folder,
    read_udiat,
    resolve_data_root,
)
from rcdnet.data.samples import CLASSES_2, DataProblem, Sample
from rcdnet.data.user_csv import read_csv

READERS = {"busi": read_busi, "bus-uclm": read_bus_uclm, "breast": read_breast, "udiat": read_udiat}
# Where each named dataset comes from (its publication; ../shared/data/README.md), for model cards and reports.
SOURCE_INFO = {
    "busi": {"site": "Baheya Hospital, Cairo, Egypt (2018; women aged 25-75)", "scanner": "GE LOGIQ E9 / E9 Agile",
             "reference": "Al-Dhabyani et al., Data in Brief 28:104863 (2020)", "patients": "not given per image"},
    "bus-uclm": {"site": "Ciudad Real General University Hospital, Spain (2022-2023)",
                 "scanner": "Siemens ACUSON S2000, 18L6 HD probe",
                 "reference": "Vallez et al., Scientific Data (2025)", "patients": "file-name prefix"},
    "breast": {"site": "Poland (several centres, 2019-2022)", "scanner": "several scanners and probes",
               "reference": "Pawłowska et al., Scientific Data 11:148 (2024)", "patients": "one image per patient"},
    "udiat": {"site": "UDIAT Diagnostic Centre, Parc Tauli, Sabadell, Spain", "scanner": "Siemens ACUSON Sequoia C512",
              "reference": "Yap et al., IEEE JBHI 22(4):1218-1226 (2018)", "patients": "not given"},
}


def load_dataset(
    name: str | None = None, data_root: Path | None = None, *, csv_path: Path | None = None,
    folder: Path | None = None, classes: tuple[str, ...] = CLASSES_2,
) -> tuple[list[Sample], list[DataProblem]]:
    """One entry point: a named dataset (:data:`READERS`) under ``data_root``, or a CSV, or a folder."""
    if csv_path is not None:
        return read_csv(csv_path, classes)
    if folder is not None:
        return read_folder(folder, classes)
    if name not in READERS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(READERS)} or pass --csv / --folder")
    return READERS[name](resolve_data_root(data_root), classes)


def load_sources(sources: tuple[str, ...] | list[str], data_root: Path | None = None,
                 classes: tuple[str, ...] = CLASSES_2) -> tuple[list[Sample], list[DataProblem]]:
    """The training pool of several sources (``data.sources``): each entry a named dataset (:data:`READERS`), a
    CSV file or a folder per class. Every sample carries its source (a user's file or folder is named by its stem),
    keys and groups are prefixed by that name so that two sources never share one, and a source listed twice is an
    error."""
    samples: list[Sample] = []
    problems: list[DataProblem] = []
    seen: dict[str, str] = {}
    for entry in sources:
        if entry in READERS:
            name, (mine, bad) = entry, load_dataset(entry, data_root, classes=classes)
        else:
            p = Path(entry)
            if not p.exists():
                raise DatasetError(f"data.sources: {entry!r} is neither a dataset name ({', '.join(READERS)}) nor an "
                                   "existing CSV file or folder")
            name = p.stem.lower()
            mine, bad = load_dataset(csv_path=p, classes=classes) if p.is_file() else load_dataset(folder=p,
                                                                                                 classes=classes)
            for s in mine:
                s.key, s.source = f"{name}/{s.key}", name
        if name in seen:
            raise DatasetError(f"data.sources: {entry!r} and {seen[name]!r} are both named {name!r}")
        seen[name] = entry
        for s in mine:
            s.group = f"{name}/{s.group}" if s.group else None
        samples += mine
        problems += bad
    if not samples:
        raise DatasetError("data.sources: no training sources listed")
    return samples, problems
