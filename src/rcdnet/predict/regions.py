"""Which part of an image a model classifies, decided in one place for the CLI, the service and every file source.

A whole-image model classifies the whole image. A region-of-interest model classifies the square around a lesion
box, which is, in this order: the box the user **given**, the box around a lesion **mask** beside the file
(``<stem>_mask*.png``), or each lesion the shipped lesion finder **found** (:class:`~rcdnet.segment.LesionFinder`,
with its confidence and measurements). When none is there the file is refused with the reason: no box and no finder
(:class:`~rcdnet.data.boxes.BoxError`), or the finder's best region is below its threshold
(:class:`~rcdnet.segment.finder.NoLesionFound`: "no lesion found: draw a box")."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rcdnet.data.boxes import Box, BoxError, box_of_mask
from rcdnet.data.decode import read_mask
from rcdnet.data.inputs import masks_beside
from rcdnet.segment.finder import LesionFinder
from rcdnet.segment.lesions import Lesion


@dataclasses.dataclass(frozen=True)
class Region:
    """What is classified: ``box`` (None: the whole image), where it came from, and the found lesion if any."""

    box: Box | None
    source: str                  # "whole image", "given", "mask" or "found"
    lesion: Lesion | None = None

    def fields(self) -> dict:
        """Columns of an output row: which box was used, and the finder's confidence and measurements (none for a
        whole-image model: its rows are as they always were)."""
        if self.source == "whole image":
            return {}
        out = {"box_source": self.source, "box": "" if self.box is None else ",".join(map(str, self.box))}
        if self.lesion is not None:
            out |= {k: v for k, v in self.lesion.summary().items() if k != "box"}
        return out


class RegionResolver:
    """``regions(path, rgb, pixel_mm)`` -> the :class:`Region` list of one picture (one per found lesion)."""

    def __init__(self, roi: bool, box: Box | None = None, finder: LesionFinder | None = None, masks: bool = True):
        """``masks``: look for a mask file beside the picture (never for an upload: its name is the user's)."""
        self.roi, self.box, self.finder, self.masks = roi, box, finder, masks
        if box is not None and not roi:
            raise ValueError("--box: this model classifies whole images (it was trained without data.roi_margin)")

    def regions(self, path: Path, rgb: np.ndarray, pixel_mm: float | None = None, several: bool = True
                ) -> list[Region]:
        if not self.roi:
            return [Region(None, "whole image")]
        if self.box is not None:
            return [Region(self.box, "given")]
        if self.masks and (masks := masks_beside(path)):
            return [Region(box_of_mask(read_mask(masks, rgb.shape[:2])), "mask")]
        if self.finder is None:
            raise BoxError(f"{path}: this region-of-interest model ships no lesion finder: give the lesion's box "
                           "(--box x0,y0,x1,y1, the service's box field, or a <stem>_mask.png beside the image)")
        finding = self.finder.find(rgb, pixel_mm)
        if not finding.found:
            from rcdnet.segment.finder import NoLesionFound

            raise NoLesionFound(f"{path}: {finding.refusal()}")
        lesions = finding.lesions if several else finding.lesions[:1]
        return [Region(les.box, "found", les) for les in lesions]
