"""rcdnet: benign vs malignant breast-ultrasound classification (the RcdNet paper, reproduced).

Sub-packages follow an image from disk to a diagnosis:
``data`` (readers, duplicate screening, splits, preprocessing) -> ``models`` (RcdNet and the registry)
-> ``training`` (the loop, checkpoints) -> ``evaluation`` (metrics, thresholds, reports) -> ``inference``.
"""

__version__ = "0.1.0"
