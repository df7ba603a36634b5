"""Torch datasets over preprocessed (cached) images, with the training augmentation of section 2.2."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2


def train_augmentation(size: int, cfg: dict) -> v2.Compose:
    """Random crop (as a small re-scale), horizontal flip, small rotation; on (1, H, W) float tensors."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(cfg.get("crop_scale_min", 0.75), 1.0), ratio=(0.85, 1.18), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=cfg.get("rotation", 15), scale=(0.9, 1.1)),
    ])


class ImageArrayDataset(Dataset):
    """(N, S, S) uint8 grayscale images + integer labels -> ((3, S, S) normalised float tensor, label).

    ``mean`` / ``std`` are the backbone's input normalisation (0.5 / 0.5 for EfficientNet-Lite). ``variants``
    (N, K, S, S), if given, are acquisition-shifted versions of each image; one replaces the original with
    probability ``variant_p``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
                 augment: v2.Compose | None = None, variants: np.ndarray | None = None, variant_p: float = 0.5):
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.variants = torch.from_numpy(np.ascontiguousarray(variants)) if variants is not None else None
        self.variant_p = variant_p
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.augment = augment
        self.epoch_seed: int | None = None

    def set_epoch_seed(self, seed: int) -> None:
        """Make image i's random augmentation a function of (seed, i) alone: the same in one process or many."""
        self.epoch_seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.epoch_seed is None or (self.augment is None and self.variants is None):
            return self._item(i)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.epoch_seed * 1_000_003 + i)
            return self._item(i)

    def _item(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[i]
        if self.variants is not None and torch.rand(()) < self.variant_p:
            img = self.variants[i, int(torch.randint(self.variants.shape[1], ()))]
        x = img.unsqueeze(0).float().div_(255)
        if self.augment is not None:
            x = self.augment(x)
        return (x.expand(3, -1, -1) - self.mean) / self.std, self.labels[i]
