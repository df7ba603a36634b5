"""The RcdNet paper's published numbers, in one place (Liu et al. 2025, Front. Bioeng. Biotechnol. 13:1526260).

Tables 1 (internal validation, BUSI) and 2 (external test, UDIAT): precision, recall, F1-score and accuracy of each
model, one run each, no confidence intervals; the tables appear to average precision / recall / F1 over both
classes (macro). The external AUC of RcdNet is given in the text (0.9866); the internal one only as "close to 1".
"""

from __future__ import annotations

PAPER_COLUMNS = ("precision", "recall", "f1", "accuracy")
PAPER_TABLES = {
    "busi-val": {"resnet": (0.9317, 0.9314, 0.9311, 0.9311), "mobilenet": (0.9372, 0.9316, 0.9306, 0.9308),
                 "regnet": (0.9393, 0.9393, 0.9391, 0.9392), "vit": (0.8203, 0.8183, 0.8176, 0.8178),
                 "resnext": (0.9339, 0.9393, 0.9391, 0.9337), "rcdnet": (0.9515, 0.9508, 0.9504, 0.9504)},
    "udiat": {"resnet": (0.8901, 0.9313, 0.9020, 0.9088), "mobilenet": (0.8960, 0.9358, 0.9084, 0.9150),
              "regnet": (0.8759, 0.9198, 0.8864, 0.8934), "vit": (0.8619, 0.8957, 0.8728, 0.8825),
              "resnext": (0.9101, 0.9461, 0.9227, 0.9289), "rcdnet": (0.9168, 0.9495, 0.9290, 0.9351)},
}
PAPER_AUC = {"busi-val": None, "udiat": 0.9866}
PAPER_NAMES = {"resnet": "ResNet50", "mobilenet": "MobileNetV2", "regnet": "RegNet", "vit": "ViT",
               "resnext": "ResNeXt", "rcdnet": "RcdNet"}


def rcdnet_row(test_set: str) -> dict[str, float | None]:
    """The paper's RcdNet numbers on ``test_set`` by metric name (``auc`` None where the paper gives none)."""
    row = dict(zip(PAPER_COLUMNS, PAPER_TABLES[test_set]["rcdnet"])) if test_set in PAPER_TABLES else {}
    return {**row, "auc": PAPER_AUC.get(test_set)}
