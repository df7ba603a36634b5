"""The model's input, defined once.

A preprocessed image (``data.preprocess.Preprocessor``: (S, S) uint8 grey levels) reaches the network like this,
in training, in the PyTorch predictor, in the ONNX export, in the heat maps and in the tests:

    (N, S, S) uint8
    -> (N, 1, S, S) float grey levels 0..255     :func:`to_grey`
    -> (N, 1, S, S) float in [0, 1]              :func:`to_unit` (training augments here, on (1, S, S) items)
    -> (N, 3, S, S) (x - mean) / std             :class:`Normalise`: the backbone's statistics, in the checkpoint
    -> (N, C) logits                             averaged with the mirrored image when test-time mirroring is on
    -> (N, C) softmax(logits / T)                T fitted on validation (:class:`DecisionFunction`)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def to_grey(images: np.ndarray) -> torch.Tensor:
    """(N, S, S) uint8 -> (N, 1, S, S) float32 grey levels 0..255: the decision function's input."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1)


def to_unit(grey: torch.Tensor) -> torch.Tensor:
    """Grey levels 0..255 -> [0, 1] (any shape): the scale augmentation and :class:`Normalise` work at."""
    return grey / 255.0


class Normalise(nn.Module):
    """(N, 1, S, S) or (1, S, S) float in [0, 1] -> three identical channels normalised with the backbone's
    ``mean`` / ``std`` ((N, 3, S, S) or (3, S, S))."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.dim() == 4 else x.expand(3, -1, -1)
        return (x - self.mean) / self.std

    def stats(self) -> dict[str, list[float]]:
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}


class DecisionFunction(nn.Module):
    """(N, 1, S, S) float grey levels 0..255 -> (N, C) calibrated probabilities.

    ``logits`` stops before the temperature (fitting T needs them); ``forward`` is the whole decision, and is
    what the ONNX export writes."""

    def __init__(self, model: nn.Module, normalise: Normalise, temperature: float = 1.0, tta: bool = False):
        super().__init__()
        self.model, self.normalise = model, normalise
        self.temperature, self.tta = float(temperature), bool(tta)

    def model_input(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) grey levels 0..255 -> (N, 3, S, S) normalised network input."""
        return self.normalise(to_unit(image))

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) grey levels 0..255 -> (N, C) logits (the image and its mirror in one batch when ``tta``)."""
        x = self.model_input(image)
        if not self.tta:
            return self.model(x)
        z = self.model(torch.cat([x, torch.flip(x, dims=[3])]))
        return z.reshape(2, -1, z.shape[-1]).mean(dim=0)  # keeps the batch axis dynamic in the export

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(image) / self.temperature, dim=1)

    def lesion_map(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) grey levels 0..255 -> (N, 1, S, S) lesion probability per pixel from the model's localisation
        head (no mirroring), upsampled to the input size."""
        z = self.model.localise(self.model_input(image))
        return torch.sigmoid(nn.functional.interpolate(z, size=image.shape[-2:], mode="bilinear"))


class WithLesionMap(nn.Module):
    """The exported graph of a model with a localisation head: (N, 1, S, S) grey levels -> (probabilities (N, C),
    lesion map (N, 1, S, S)), the decision and where the lesion is, in one pass each."""

    def __init__(self, decision: DecisionFunction):
        super().__init__()
        self.decision = decision

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decision(image), self.decision.lesion_map(image)
