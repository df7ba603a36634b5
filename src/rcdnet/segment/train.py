"""Training the segmenter (``segment.*`` settings) and choosing its "lesion found" threshold on validation.

Loss: binary cross-entropy plus soft Dice over the batch (normal images have empty masks, so they teach it to find
nothing); augmentation: a random resized crop, a mirror and a small rotation of image and mask together, gain and
gamma of the image alone, seeded by (seed, epoch). The epoch with the best validation Dice is kept."""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.transforms import v2

from rcdnet.config import SegmentConfig
from rcdnet.segment.data import MaskSet
from rcdnet.segment.model import SegmenterGraph, build_segmenter, to_input


def augmentation(size: int) -> v2.Compose:
    """On (2, S, S) float tensors: the image and its mask, moved together."""
    return v2.Compose([v2.RandomResizedCrop(size, scale=(0.5, 1.0), ratio=(0.75, 1.33), antialias=True),
                       v2.RandomHorizontalFlip(), v2.RandomAffine(degrees=10.0)])


def augmented_batch(data: MaskSet, idx: np.ndarray, aug: v2.Compose) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, S, S) inputs and (B, 1, S, S) targets in [0, 1]."""
    xs, ms = [], []
    for i in idx:
        pair = aug(torch.from_numpy(np.stack([data.images[i], data.masks[i]])).float())
        gain, gamma = float(torch.empty(()).uniform_(0.7, 1.3)), float(torch.empty(()).uniform_(0.7, 1.5))
        xs.append(((pair[0] / 255.0).clamp(0, 1) ** gamma * gain).clamp(0, 1) * 255.0)
        ms.append(pair[1:] / 255.0)
    return to_input(torch.stack(xs)), torch.stack(ms)


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + dice


@torch.inference_mode()
def predict_maps(model: torch.nn.Module, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """(N, S, S) uint8 -> (N, S, S) float32 lesion probabilities."""
    graph = SegmenterGraph(model).eval()
    return np.concatenate([graph(torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).float()[:, None]).numpy()
                           for i in range(0, len(images), batch)]) if len(images) else np.zeros((0,) + images.shape[1:])


def mean_dice(maps: np.ndarray, masks: np.ndarray) -> float:
    """Mean Dice of ``maps`` >= 0.5 against ``masks`` >= 128 over the items with a lesion (NaN if none)."""
    dice = [2 * ((p >= 0.5) & (m >= 128)).sum() / max((p >= 0.5).sum() + (m >= 128).sum(), 1)
            for p, m in zip(maps, masks) if (m >= 128).any()]
    return float(np.mean(dice)) if dice else float("nan")


def train_segmenter(cfg: SegmentConfig, seed: int, train: MaskSet, val: MaskSet, log=print
                    ) -> tuple[torch.nn.Module, list[dict]]:
    """The trained network (the epoch with the best validation Dice) and the per-epoch history."""
    torch.manual_seed(seed)
    model = build_segmenter(pretrained=True, freeze_blocks=cfg.freeze_blocks)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * math.ceil(len(train.images) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k / max(steps, 1), 1))))
    aug, history, best, best_state = augmentation(cfg.image_size), [], -1.0, None
    for epoch in range(1, cfg.epochs + 1):
        t0, losses = time.perf_counter(), []
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(seed * 1_000_003 + epoch)
        model.train()
        for m in model.modules():  # frozen blocks keep their ImageNet batch-norm statistics
            if isinstance(m, torch.nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters()):
                m.eval()
        order = rng.permutation(len(train.images))
        for start in range(0, len(order), cfg.batch_size):
            x, y = augmented_batch(train, order[start:start + cfg.batch_size], aug)
            loss = seg_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        dice = mean_dice(predict_maps(model, val.images), val.masks)
        history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "val_dice": round(dice, 4),
                        "seconds": round(time.perf_counter() - t0, 1)})
        log(f"segmenter epoch {epoch}/{cfg.epochs}: loss {history[-1]['loss']}, validation Dice {dice:.3f} "
            f"({history[-1]['seconds']} s)")
        if not dice <= best:  # NaN (no validation lesion) keeps the latest
            best, best_state = dice, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history


def choose_threshold(confidences: np.ndarray, target: float) -> float:
    """The highest confidence threshold that keeps at least ``target`` of the (N,) validation lesion images'
    best-region confidences (0 where nothing was found) at or above it."""
    c = np.sort(np.asarray(confidences, float))
    if not len(c):
        return 0.5
    k = int(math.floor((1 - target) * len(c) + 1e-9))
    return float(c[min(k, len(c) - 1)])
