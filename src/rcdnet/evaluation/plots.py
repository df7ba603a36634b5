"""Figures: training curves (paper Fig. 2A/2B), ROC curves (Fig. 2C / 3), confusion matrices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, roc_curve


def plot_training_curves(history: list[dict], out_dir: Path) -> list[Path]:
    """Loss and accuracy per epoch, train vs validation: ``loss_curve.png``, ``accuracy_curve.png`` (one set of curves
    per member of a seed ensemble: records with a ``member``)."""
    members = sorted({h.get("member", 0) for h in history})
    paths = []
    for key, title in (("loss", "Loss"), ("acc", "Accuracy")):
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
        for k in members:
            rows = [h for h in history if h.get("member", 0) == k]
            ep, tag = [h["epoch"] for h in rows], f", member {k + 1}" if len(members) > 1 else ""
            ax.plot(ep, [h[f"train_{key}"] for h in rows], "C0",
                    label=("train (Mixup targets)" if key == "acc" else "train") + tag, alpha=1 - 0.25 * k)
            ax.plot(ep, [h[f"val_{key}"] for h in rows], "C1", label=f"validation{tag}", alpha=1 - 0.25 * k)
            if key == "acc":
                ax.plot(ep, [h["val_auc"] for h in rows], "C2--", label=f"validation AUC{tag}", alpha=1 - 0.25 * k)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small" if len(members) > 1 else None)
        fig.tight_layout()
        p = Path(out_dir) / f"{'loss' if key == 'loss' else 'accuracy'}_curve.png"
        fig.savefig(p)
        plt.close(fig)
        paths.append(p)
    return paths


def plot_roc(panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray, float, tuple | None]]], path: Path,
             title: str | None = None) -> Path:
    """The one ROC figure: ``panels`` maps a panel title to its curves, name -> (y, p_malignant, auc,
    (lo, hi) or None); one panel per entry, side by side, with an optional overall ``title``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.8), dpi=120, squeeze=False)
    for ax, (panel_title, curves) in zip(axes[0], panels.items()):
        for name, (y, p, auc, ci) in curves.items():
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=f"{name}: AUC {auc:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=panel_title)
        ax.legend(loc="lower right", fontsize=7 if len(curves) > 3 else 8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_confusion(y: np.ndarray, pred: np.ndarray, labels: list[str], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(3.8, 3.4), dpi=120)
    ConfusionMatrixDisplay.from_predictions(y, pred, labels=list(range(len(labels))), display_labels=labels, ax=ax,
                                            colorbar=False, cmap="Blues")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
