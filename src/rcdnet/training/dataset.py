"""Torch datasets over preprocessed (cached) images, with the training augmentation of section 2.2."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from rcdnet.config import AugmentConfig
from rcdnet.models.input import Normalise, to_unit


def train_augmentation(size: int, aug: AugmentConfig) -> v2.Compose:
    """Random crop (as a small re-scale), horizontal flip, small rotation; on (1, H, W) float tensors."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(aug.crop_scale_min, 1.0), ratio=(0.85, 1.18), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomAffine(degrees=aug.rotation, scale=(0.9, 1.1)),
    ])


class ImageArrayDataset(Dataset):
    """(N, S, S) uint8 grayscale images + integer labels -> ((3, S, S) model input, label).

    An item is what :class:`rcdnet.models.input.DecisionFunction` feeds the model, with the augmentation (if any)
    applied to the grey levels scaled to [0, 1] before ``normalise``. ``variants`` (N, K, S, S), if given, are
    acquisition-shifted versions of each image; one replaces the original with probability ``variant_p``.

    ``masks`` (N, S, S) uint8 with ``has_mask`` (N,) bool (a localisation head): items are then (input, label,
    (1, S, S) mask in [0, 1] under the same augmentation, whether it counts). A shifted copy may have moved the
    lesion (zoom, aspect), so an item drawn from one does not count for the mask loss."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, normalise: Normalise,
                 augment: v2.Compose | None = None, variants: np.ndarray | None = None, variant_p: float = 0.5,
                 masks: np.ndarray | None = None, has_mask: np.ndarray | None = None):
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.variants = torch.from_numpy(np.ascontiguousarray(variants)) if variants is not None else None
        self.variant_p = variant_p
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.normalise = normalise
        self.augment = augment
        self.masks = torch.from_numpy(np.ascontiguousarray(masks)) if masks is not None else None
        self.has_mask = torch.as_tensor(has_mask if has_mask is not None else np.zeros(len(images), bool))
        self.epoch_seed: int | None = None

    def set_epoch_seed(self, seed: int) -> None:
        """Make image i's random augmentation a function of (seed, i) alone: the same in one process or many."""
        self.epoch_seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        if self.epoch_seed is None or (self.augment is None and self.variants is None):
            return self._item(i)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.epoch_seed * 1_000_003 + i)
            return self._item(i)

    @torch.no_grad()
    def _item(self, i: int) -> tuple[torch.Tensor, ...]:
        img, counts = self.images[i], self.has_mask[i]
        if self.variants is not None and torch.rand(()) < self.variant_p:
            img = self.variants[i, int(torch.randint(self.variants.shape[1], ()))]
            counts = torch.tensor(False)
        x = to_unit(img.unsqueeze(0).float())
        if self.masks is None:
            return self.normalise(self.augment(x) if self.augment is not None else x), self.labels[i]
        xm = torch.cat([x, self.masks[i].unsqueeze(0).float() / 255.0])  # one draw of the augmentation for both
        if self.augment is not None:
            xm = self.augment(xm)
        return self.normalise(xm[:1]), self.labels[i], xm[1:], counts


class SourceBalancedSampler(Sampler[int]):
    """Training indices drawn so that every source is equally likely in each batch (``train.balance_sources``).

    An epoch is ``len(sources)`` draws with replacement: a source uniformly at random, then one of its images
    uniformly. Seeded by (seed, epoch) alone, so a resumed run repeats an uninterrupted one; under DDP each of W
    ranks takes every W-th draw, as :class:`~torch.utils.data.DistributedSampler` does."""

    def __init__(self, sources: list[str], num_replicas: int = 1, rank: int = 0, seed: int = 0):
        names = sorted(set(sources))
        arr = np.array(sources)
        self.members = [np.flatnonzero(arr == n) for n in names]
        self.num_samples = len(sources) // num_replicas
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draws(self) -> np.ndarray:
        """This epoch's indices for every rank, (num_samples * num_replicas,)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        total = self.num_samples * self.num_replicas
        which = rng.integers(len(self.members), size=total)
        pick = rng.random(total)
        sizes = np.array([len(m) for m in self.members])
        return np.array([self.members[w][int(u * sizes[w])] for w, u in zip(which, pick)], dtype=int)

    def __iter__(self):
        return iter(self.draws()[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
