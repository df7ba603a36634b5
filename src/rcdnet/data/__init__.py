"""Data: reading datasets, screening duplicates, splitting, preprocessing and augmentation."""

from rcdnet.data.samples import CLASSES_2, CLASSES_3, DataProblem, ImageReadError, Sample, read_image, read_mask

__all__ = ["CLASSES_2", "CLASSES_3", "DataProblem", "ImageReadError", "Sample", "read_image", "read_mask"]
