"""Calibration: expected calibration error, temperature scaling (fit on validation only), reliability diagrams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Binary ECE: |observed malignant rate - mean predicted p(malignant)|, weighted over ``n_bins`` equal-width
    bins of p. ``y`` (N,) in {0, 1}, ``p`` (N,) probabilities."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, y: np.ndarray, max_iter: int = 200) -> float:
    """Temperature T > 0 minimising the negative log-likelihood of softmax(logits / T) on (logits, y).

    ``logits`` (N, C), ``y`` (N,) class indices. Fit it on validation data only."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    t = torch.as_tensor(y, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), t)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().item())


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, n_bins: int = 10) -> Path:
    """``curves``: name -> (y, p). Observed malignant rate against mean predicted probability per bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.6), dpi=120)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for name, (y, p) in curves.items():
        y, p = np.asarray(y, float), np.asarray(p, float)
        bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
        xs = [p[bins == b].mean() for b in range(n_bins) if (bins == b).any()]
        ys = [y[bins == b].mean() for b in range(n_bins) if (bins == b).any()]
        ax.plot(xs, ys, "o-", label=f"{name} (ECE {expected_calibration_error(y, p, n_bins):.3f})")
    ax.set_xlabel("predicted p(malignant)")
    ax.set_ylabel("observed malignant rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
