"""Pictures of heat maps: one panel pair per image, and a grid like the paper's Figure 4."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CAPTION_PX = 44  # height of the caption band under each panel pair


def overlay(rgb: np.ndarray, heat: np.ndarray, mask: np.ndarray | None = None, alpha: float = 0.45,
            found: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 image + (H, W) heat in [0, 1] (+ boolean outlines: the lesion mask in green, the lesion the
    model's localisation head found in white) -> (H, W, 3) uint8."""
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = cv2.addWeighted(rgb, 1 - alpha, colour, alpha, 0)
    for outline, rgb_colour in ((mask, (0, 255, 0)), (found, (255, 255, 255))):
        if outline is not None:
            contours, _ = cv2.findContours(outline.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, rgb_colour, max(1, round(min(rgb.shape[:2]) / 250)))
    return out


def panel(rgb: np.ndarray, heat: np.ndarray, mask: np.ndarray | None, caption: list[str],
          found: np.ndarray | None = None) -> np.ndarray:
    """Original | overlay (with the outlines of :func:`overlay`) side by side, a caption band below:
    (H + 44, 2W, 3) uint8."""
    h, w = rgb.shape[:2]
    band = np.full((CAPTION_PX, 2 * w, 3), 255, np.uint8)
    scale = max(0.35, min(0.6, w / 900))
    for i, line in enumerate(caption[:2]):
        cv2.putText(band, line, (6, 17 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([np.hstack([rgb, overlay(rgb, heat, mask, found=found)]), band])


def save_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write the image")


def grid_figure(cells: dict[tuple[str, str], dict], rows: list[str], cols: list[str], path: Path, title: str) -> None:
    """A Figure-4-like grid. ``cells[(row, col)]`` holds ``rgb``, ``heat``, ``mask`` (or None) and ``caption``;
    a missing cell is left blank with 'none'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.2 * len(cols), 3.4 * len(rows)), squeeze=False)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i][j]
            ax.axis("off")
            cell = cells.get((r, c))
            if cell is None:
                ax.text(0.5, 0.5, "none", ha="center", va="center", color="grey")
            else:
                ax.imshow(overlay(cell["rgb"], cell["heat"], cell["mask"]))
                ax.set_title(cell["caption"], fontsize=8)
            if j == 0:
                ax.text(-0.06, 0.5, r, transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize=10)
            if i == 0:
                ax.text(0.5, 1.2, c, transform=ax.transAxes, ha="center", va="bottom", fontsize=10, weight="bold")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
