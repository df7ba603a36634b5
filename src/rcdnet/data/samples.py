"""The unit of data (:class:`Sample`) and of a data problem (:class:`DataProblem`). Decoding: ``data.decode``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

CLASSES_2 = ("benign", "malignant")
CLASSES_3 = ("normal", "benign", "malignant")


@dataclasses.dataclass
class Sample:
    """One image with its label.

    ``label`` is a class name (``benign`` / ``malignant`` / ``normal``); ``key`` is a stable identifier
    (``busi/benign (12)``, ``udiat/000012``, or the path for user data); ``group`` is filled by duplicate
    screening (or given by a source: BUS-UCLM's patient, a CSV's group column) and keeps its images on one side of a
    split; ``box`` is a lesion box given by the user, (x0, y0, x1, y1) in pixels (``data.boxes``).
    """

    path: Path
    label: str
    key: str
    source: str
    mask_paths: tuple[Path, ...] = ()
    group: str | None = None
    box: tuple[int, int, int, int] | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    def to_row(self) -> dict:
        return {
            "key": self.key,
            "path": str(self.path),
            "label": self.label,
            "source": self.source,
            "group": self.group or "",
            "masks": ";".join(str(p) for p in self.mask_paths),
        }


@dataclasses.dataclass
class DataProblem:
    """A file that was skipped or looks wrong, with the reason; collected, never fatal."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"
