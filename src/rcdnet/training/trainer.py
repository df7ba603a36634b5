"""The fine-tuning loop (paper section 2.4): Adam, cosine annealing, label smoothing, Mixup, best-by-validation.

Every epoch is seeded from (seed, epoch) alone, so a resumed run repeats an uninterrupted one exactly; a
checkpoint is written atomically after every epoch (``last.pt``) and whenever validation improves
(``best.pt``), so ``kill -9`` loses at most the epoch in progress.
"""

from __future__ import annotations

import json
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from rcdnet import __version__
from rcdnet.data.dataset import ImageArrayDataset, train_augmentation
from rcdnet.data.prepare import PreparedData, classes_from_config, preprocessor_from_config
from rcdnet.data.preprocess import preprocess_variants
from rcdnet.inference import CHECKPOINT_FORMAT, build_model
from rcdnet.models.registry import freeze_stages, train_mode
from rcdnet.training.checkpoint import save_atomic


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.inference_mode()
def predict_loader(model: torch.nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray, float]:
    """-> (probabilities (N, C), labels (N,), mean cross-entropy)."""
    model.eval()
    probs, labels, loss_sum = [], [], 0.0
    for x, y in loader:
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        probs.append(torch.softmax(logits, 1).numpy())
        labels.append(y.numpy())
    p, y = np.concatenate(probs), np.concatenate(labels)
    return p, y, loss_sum / len(y)


def _auc(y: np.ndarray, p: np.ndarray, classes: list[str]) -> float:
    y_mal = (y == classes.index("malignant")).astype(int)
    return float(roc_auc_score(y_mal, p[:, classes.index("malignant")])) if len(set(y_mal)) == 2 else float("nan")


class Trainer:
    def __init__(self, cfg: dict, data: PreparedData, run_dir: Path, progress: bool = True,
                 cache_dir: Path | None = None):
        self.cfg, self.data, self.run_dir, self.progress = cfg, data, Path(run_dir), progress
        self.classes = list(classes_from_config(cfg))
        tr, va = cfg["train"], cfg["augment"]
        if tr["threads"]:
            torch.set_num_threads(tr["threads"])
        seed_everything(cfg["seed"])
        self.model = build_model(cfg, len(self.classes), pretrained=cfg["model"]["pretrained"])
        self.frozen = freeze_stages(self.model, cfg["model"]["freeze_stages"])
        self.model = self.model.to(memory_format=torch.channels_last)
        pcfg = getattr(self.model, "pretrained_cfg", None) or {}
        mean, std = pcfg.get("mean", (0.5,) * 3), pcfg.get("std", (0.5,) * 3)
        label_idx = {c: i for i, c in enumerate(self.classes)}
        (tr_s, tr_x), (va_s, va_x) = data.subset("train"), data.subset("val")
        if len(tr_s) < tr["batch_size"]:
            raise ValueError(f"only {len(tr_s)} training images: fewer than one batch of {tr['batch_size']}")
        variants = (preprocess_variants(tr_s, preprocessor_from_config(cfg), va["ultrasound_variants"], cache_dir,
                                        progress=progress) if va["ultrasound_variants"] else None)
        self.train_ds = ImageArrayDataset(tr_x, np.array([label_idx[s.label] for s in tr_s]), mean, std,
                                          train_augmentation(cfg["data"]["image_size"], va), variants,
                                          va["ultrasound_p"])
        self.val_ds = ImageArrayDataset(va_x, np.array([label_idx[s.label] for s in va_s]), mean, std)
        self.val_keys = [s.key for s in va_s]
        self.generator = torch.Generator()
        self.train_loader = DataLoader(self.train_ds, batch_size=tr["batch_size"], shuffle=True, drop_last=True,
                                       generator=self.generator)
        self.val_loader = DataLoader(self.val_ds, batch_size=64)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=tr["lr"], weight_decay=tr["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=tr["epochs"])
        smoothing = va["label_smoothing"]
        self.mixup = (Mixup(mixup_alpha=va["mixup_alpha"], label_smoothing=smoothing, num_classes=len(self.classes))
                      if va["mixup_alpha"] > 0 else None)
        self.loss_fn = SoftTargetCrossEntropy() if self.mixup else (
            LabelSmoothingCrossEntropy(smoothing) if smoothing > 0 else torch.nn.CrossEntropyLoss())
        self.ema = ModelEmaV3(self.model, decay=tr["ema_decay"]) if tr["ema_decay"] > 0 else None
        self.history: list[dict] = []
        self.best = {"epoch": -1, "metric": -float("inf")}
        self.start_epoch = 0
        self.ckpt_dir = self.run_dir / "checkpoints"

    # -- checkpoints ---------------------------------------------------------------------------------------
    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and kept: the EMA average when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def _state(self, epoch: int, full: bool) -> dict:
        state = {"format": CHECKPOINT_FORMAT, "version": __version__, "config": self.cfg, "classes": self.classes,
                 "epoch": epoch, "model": self.eval_model.state_dict(), "val_keys": self.val_keys,
                 "history": self.history, "best": self.best}
        if full:
            state.update(train_model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                         scheduler=self.scheduler.state_dict())
        return state

    def resume(self) -> bool:
        last = self.ckpt_dir / "last.pt"
        if not last.exists():
            return False
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        self.model.load_state_dict(ckpt["train_model"])
        if self.ema is not None:
            self.ema.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.history, self.best, self.start_epoch = ckpt["history"], ckpt["best"], ckpt["epoch"] + 1
        return True

    # -- the loop ------------------------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int, bar: tqdm | None) -> tuple[float, float]:
        seed = self.cfg["seed"] * 100_003 + epoch
        seed_everything(seed)
        self.generator.manual_seed(seed)
        train_mode(self.model, self.frozen)
        loss_sum, correct, n = 0.0, 0, 0
        for x, y in self.train_loader:
            x = x.contiguous(memory_format=torch.channels_last)
            target = y
            if self.mixup:
                x, target = self.mixup(x, y)
            logits = self.model(x)
            loss = self.loss_fn(logits, target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            hard = target.argmax(1) if target.ndim == 2 else target
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == hard).sum().item()
            n += len(y)
            if bar is not None:
                bar.update(len(y))
                bar.set_postfix(loss=f"{loss_sum / n:.3f}", refresh=False)
        self.scheduler.step()
        return loss_sum / n, correct / n

    def fit(self) -> dict:
        epochs = self.cfg["train"]["epochs"]
        select = self.cfg["train"]["select_metric"]
        for epoch in range(self.start_epoch, epochs):
            t0 = time.time()
            bar = (tqdm(total=len(self.train_loader) * self.train_loader.batch_size, unit="img", leave=True,
                        desc=f"epoch {epoch + 1}/{epochs}") if self.progress else None)
            train_loss, train_acc = self.train_one_epoch(epoch, bar)
            t_train = time.time() - t0
            p, y, val_loss = predict_loader(self.eval_model, self.val_loader)
            val_acc = float((p.argmax(1) == y).mean())
            val_auc = _auc(y, p, self.classes)
            rec = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                   "val_acc": val_acc, "val_auc": val_auc, "lr": self.optimizer.param_groups[0]["lr"],
                   "train_seconds": round(t_train, 2), "epoch_seconds": round(time.time() - t0, 2),
                   "train_images_per_s": round(len(self.train_loader) * self.train_loader.batch_size / t_train, 2),
                   "peak_memory_mb": round(peak_memory_mb(), 1)}
            self.history.append(rec)
            metric = {"auc": val_auc, "accuracy": val_acc, "loss": -val_loss}[select]
            improved = metric > self.best["metric"]
            if improved:
                self.best = {"epoch": epoch + 1, "metric": metric, "name": select}
                save_atomic(self._state(epoch, full=False), self.ckpt_dir / "best.pt")
            save_atomic(self._state(epoch, full=True), self.ckpt_dir / "last.pt")
            (self.run_dir / "history.json").write_text(json.dumps(self.history, indent=1))
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.3f}", val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}",
                                val_auc=f"{val_auc:.3f}", best="*" if improved else "")
                bar.close()
        return self.best
