"""The fine-tuning loop (paper section 2.4): Adam, cosine annealing, label smoothing, Mixup, best-by-validation.

Every epoch is seeded from (seed, epoch) alone and every image's augmentation from (seed, epoch, index), so a
resumed run repeats an uninterrupted one exactly; a checkpoint is written atomically after every epoch
(``last.pt``) and whenever validation improves (``best.pt``), so ``kill -9`` loses at most the epoch in progress.

Under ``torchrun`` the model is wrapped in DistributedDataParallel: each of W ranks takes batch_size / W images
of every global batch (DistributedSampler), gradients are averaged, validation is sharded and gathered, and only
rank 0 writes. On GPUs, mixed precision (``train.precision``: auto = bf16 where supported).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import SWALR, AveragedModel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from rcdnet import __version__, runtime
from rcdnet.config import RunConfig
from rcdnet.data.prepare import PreparedData, classes_from_config
from rcdnet.data.preprocess import Preprocessor, preprocess_masks, preprocess_variants
from rcdnet.models.input import Normalise
from rcdnet.models.registry import build_model, freeze_stages, input_stats, train_mode
from rcdnet.training import distributed as dist
from rcdnet.models.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_atomic
from rcdnet.training.dataset import ImageArrayDataset, SourceBalancedSampler, train_augmentation
from rcdnet.training.localise import mask_dice, mask_loss, mix_batch


@torch.inference_mode()
def predict_loader(model: torch.nn.Module, loader: DataLoader, device: torch.device = torch.device("cpu")
                   ) -> tuple[np.ndarray, np.ndarray]:
    """-> (float32 logits (N, C), labels (N,)) in the loader's order."""
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(x.to(device)).float().cpu().numpy())
        labels.append(y.numpy())
    return np.concatenate(logits), np.concatenate(labels)


def stopped(history: list[dict], patience: int) -> bool:
    """Whether early stopping (``train.patience`` > 0) has ended a training whose epochs so far are ``history``:
    its last epoch is ``patience`` epochs after its best."""
    last = history[-1] if history else {}
    return bool(patience and last and last["epoch"] - last.get("best_epoch", last["epoch"]) >= patience)


def _auc(y: np.ndarray, p: np.ndarray, classes: list[str]) -> float:
    y_mal = (y == classes.index("malignant")).astype(int)
    return float(roc_auc_score(y_mal, p[:, classes.index("malignant")])) if len(set(y_mal)) == 2 else float("nan")


class Trainer:
    """Fine-tunes one model on ``data``'s training split and validates on its validation split every epoch."""

    def __init__(self, cfg: RunConfig, data: PreparedData, run_dir: Path, progress: bool = True,
                 cache_dir: Path | None = None, ctx: dist.Context | None = None):
        self.ctx = ctx or dist.Context()
        self.cfg, self.data, self.run_dir, self.progress = cfg, data, Path(run_dir), progress and self.ctx.main
        self.classes = list(classes_from_config(cfg))
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.history: list[dict] = []
        self.best = {"epoch": -1, "metric": -float("inf")}
        self.start_epoch = 0
        self._check_batch(len(data.subset("train")[0]))
        runtime.apply(cfg.train.threads)
        self.precision = dist.resolve_precision(self.ctx, cfg.train.precision)
        runtime.seed_everything(cfg.seed)
        self._build_model()
        self._build_data(cache_dir)
        self._build_optimisation()

    def _check_batch(self, n_train: int) -> None:
        batch = self.cfg.train.batch_size
        if batch % self.ctx.world:
            raise ValueError(f"train.batch_size {batch} is the global batch: it must divide evenly "
                             f"over {self.ctx.world} processes")
        if n_train < batch:
            raise ValueError(f"only {n_train} training images: fewer than one batch of {batch}")

    def _build_model(self) -> None:
        """The model (stem and first stages frozen), its input normalisation, and the DDP wrapper if distributed."""
        model = build_model(self.cfg, len(self.classes), pretrained=self.cfg.model.pretrained)
        self.frozen = freeze_stages(model, self.cfg.model.freeze_stages)
        self.model = model.to(self.ctx.device, memory_format=torch.channels_last)
        self.normalise = Normalise(*input_stats(self.model))
        self.net = self.model  # what the loop calls: the DDP wrapper when distributed
        if self.ctx.distributed:
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.ctx.device.index] if self.ctx.device.type == "cuda" else None)

    def _build_data(self, cache_dir: Path | None) -> None:
        """Augmented training set (+ shifted variants), validation set, and this rank's loaders."""
        aug, size = self.cfg.augment, self.cfg.data.image_size
        label_idx = {c: i for i, c in enumerate(self.classes)}
        (tr_samples, tr_images), (val_samples, val_images) = self.data.subset("train"), self.data.subset("val")
        pre = Preprocessor.from_config(self.cfg.data)
        self.localise = self.cfg.train.localise_weight > 0
        masks = preprocess_masks(tr_samples, pre, cache_dir) if self.localise else (None, None)
        self.val_masks = preprocess_masks(val_samples, pre, cache_dir) if self.localise else None
        self.val_images = val_images
        variants = (preprocess_variants(tr_samples, pre, aug.ultrasound_variants, cache_dir,
                                        max_level=aug.ultrasound_level, progress=self.progress,
                                        box_jitter=aug.box_jitter)
                    if aug.ultrasound_variants else None)
        self.train_ds = ImageArrayDataset(tr_images, np.array([label_idx[s.label] for s in tr_samples]),
                                          self.normalise, train_augmentation(size, aug), variants, aug.ultrasound_p,
                                          *masks)
        self.val_ds = ImageArrayDataset(val_images, np.array([label_idx[s.label] for s in val_samples]),
                                        self.normalise)
        self.val_keys = [s.key for s in val_samples]
        self.sampler = (SourceBalancedSampler([s.source for s in tr_samples], self.ctx.world, self.ctx.rank,
                                              self.cfg.seed) if self.cfg.train.balance_sources else
                        DistributedSampler(self.train_ds, num_replicas=self.ctx.world, rank=self.ctx.rank,
                                           shuffle=True, seed=self.cfg.seed, drop_last=True))
        self.train_loader = DataLoader(self.train_ds, batch_size=self.cfg.train.batch_size // self.ctx.world,
                                       sampler=self.sampler, drop_last=True)
        self.val_index = np.arange(self.ctx.rank, len(self.val_ds), self.ctx.world)  # this rank's shard
        self.val_loader = DataLoader(Subset(self.val_ds, self.val_index.tolist()), batch_size=64)

    def _build_optimisation(self) -> None:
        """Adam + cosine schedule, Mixup / label smoothing, and the optional EMA or SWA average."""
        tr, aug = self.cfg.train, self.cfg.augment
        self.scaler = torch.amp.GradScaler(self.ctx.device.type, enabled=self.precision == "fp16")
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=tr.lr, weight_decay=tr.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=tr.epochs)
        self.mixup = (Mixup(mixup_alpha=aug.mixup_alpha, label_smoothing=aug.label_smoothing,
                            num_classes=len(self.classes)) if aug.mixup_alpha > 0 and not self.localise else None)
        self.mix_masks = aug.mixup_alpha > 0 and self.localise  # Mixup that mixes the masks as well (mix_batch)
        self.loss_fn = SoftTargetCrossEntropy() if self.mixup or self.mix_masks else (
            LabelSmoothingCrossEntropy(aug.label_smoothing) if aug.label_smoothing > 0 else torch.nn.CrossEntropyLoss())
        self.ema = ModelEmaV3(self.model, decay=tr.ema_decay) if tr.ema_decay > 0 else None
        self.swa_start = tr.swa_start
        if self.swa_start and (self.ema is not None or not 1 <= self.swa_start <= tr.epochs):
            raise ValueError(f"train.swa_start {self.swa_start}: must be an epoch in 1..{tr.epochs}, "
                             "and SWA does not combine with train.ema_decay > 0")
        # SWA: from epoch swa_start on, the learning rate anneals to swa_lr and stays there, and the weights at the end
        # of every epoch are averaged with equal weight; batch-norm statistics are averaged the same way
        # (use_buffers), so the frozen stages keep their ImageNet statistics and no extra pass is needed.
        self.swa = AveragedModel(self.model, use_buffers=True) if self.swa_start else None
        self.swa_scheduler = SWALR(self.optimizer, swa_lr=tr.swa_lr, anneal_epochs=2) if self.swa_start else None

    # -- checkpoints ---------------------------------------------------------------------------------------
    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated and kept: the EMA or SWA average when enabled (SWA once it has begun)."""
        if self.ema is not None:
            return self.ema.module
        if self.swa is not None and int(self.swa.n_averaged) > 0:
            return self.swa.module
        return self.model

    def _state(self, epoch: int, full: bool) -> dict:
        state = {"format": CHECKPOINT_FORMAT, "version": __version__, "config": self.cfg.to_dict(),
                 "classes": self.classes, "epoch": epoch, "model": self.eval_model.state_dict(),
                 "val_keys": self.val_keys, "history": self.history, "best": self.best,
                 "input": {**self.normalise.stats(),
                           "preprocessing": dataclasses.asdict(Preprocessor.from_config(self.cfg.data))}}
        if full:
            state.update(train_model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                         scheduler=self.scheduler.state_dict())
            if self.swa is not None:
                state.update(swa=self.swa.state_dict(), swa_scheduler=self.swa_scheduler.state_dict())
        return state

    def resume(self) -> bool:
        last = self.ckpt_dir / "last.pt"
        if not last.exists():
            return False
        ckpt = load_checkpoint(last, map_location=self.ctx.device)
        self.model.load_state_dict(ckpt["train_model"])
        if self.ema is not None:
            self.ema.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.swa is not None:
            self.swa.load_state_dict(ckpt["swa"])
            self.swa_scheduler.load_state_dict(ckpt["swa_scheduler"])
        self.history, self.best, self.start_epoch = ckpt["history"], ckpt["best"], ckpt["epoch"] + 1
        return True

    # -- the loop ------------------------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int, bar: tqdm | None) -> tuple[float, float]:
        seed = self.cfg.seed * 100_003 + epoch
        runtime.seed_everything(seed * 7 + self.ctx.rank)  # Mixup draws differ per rank, as in any DDP run
        self.sampler.set_epoch(epoch)
        self.train_ds.set_epoch_seed(seed)
        train_mode(self.model, self.frozen)
        loss_sum, correct, n = 0.0, 0, 0
        for batch in self.train_loader:
            x = batch[0].to(self.ctx.device, memory_format=torch.channels_last)
            y = batch[1].to(self.ctx.device)
            mask, counts = (t.to(self.ctx.device) for t in batch[2:]) if self.localise else (None, None)
            target = y
            if self.mixup:
                x, target = self.mixup(x, y)
            elif self.mix_masks:
                x, target, mask, counts = mix_batch(x, y, mask, counts, self.cfg.augment, len(self.classes))
            with dist.autocast(self.ctx, self.precision):
                out = self.net(x)
                logits, mask_logits = out if isinstance(out, tuple) else (out, None)
                loss = self.loss_fn(logits.float(), target)
                if mask_logits is not None:
                    loss = loss + self.cfg.train.localise_weight * mask_loss(mask_logits.float(), mask, counts)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(self.model)
            hard = target.argmax(1) if target.ndim == 2 else target
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == hard).sum().item()
            n += len(y)
            if bar is not None:
                bar.update(len(y) * self.ctx.world)
                bar.set_postfix(loss=f"{loss_sum / n:.3f}", refresh=False)
        if self.swa is not None and epoch + 1 >= self.swa_start:
            self.swa.update_parameters(self.model)
            self.swa_scheduler.step()
        else:
            self.scheduler.step()
        loss_sum, correct, n = dist.all_sum(self.ctx, [loss_sum, correct, n])
        return loss_sum / n, correct / n

    def validate(self) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N, C), labels (N,)) of the whole validation split, gathered from every rank's shard."""
        logits, labels = predict_loader(self.eval_model, self.val_loader, self.ctx.device)
        parts = dist.all_gather_objects(self.ctx, (self.val_index, logits, labels))
        order = np.concatenate([p[0] for p in parts])
        z, y = np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
        inv = np.argsort(order)
        return z[inv], y[inv]

    def validate_masks(self) -> float:
        """Mean Dice of the localiser's masks on the validation images that have one."""
        return mask_dice(self.eval_model, self.normalise, self.val_images, *self.val_masks, self.ctx.device)

    def fit(self) -> dict:
        epochs = self.cfg.train.epochs
        select = self.cfg.train.select_metric
        for epoch in range(self.start_epoch, epochs):
            if stopped(self.history, self.cfg.train.patience):
                break
            t0 = time.time()
            per_epoch = len(self.train_loader) * self.train_loader.batch_size * self.ctx.world
            bar = (tqdm(total=per_epoch, unit="img", leave=True,
                        desc=f"epoch {epoch + 1}/{epochs}") if self.progress else None)
            train_loss, train_acc = self.train_one_epoch(epoch, bar)
            t_train = time.time() - t0
            z, y = self.validate()
            val_loss = float(F.cross_entropy(torch.from_numpy(z), torch.from_numpy(y)))
            p = torch.softmax(torch.from_numpy(z), 1).numpy()
            val_acc = float((p.argmax(1) == y).mean())
            val_auc = _auc(y, p, self.classes)
            rec = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                   "val_acc": val_acc, "val_auc": val_auc, "lr": self.optimizer.param_groups[0]["lr"],
                   **({"val_dice": self.validate_masks()} if self.localise else {}),
                   "train_seconds": round(t_train, 2), "epoch_seconds": round(time.time() - t0, 2),
                   "train_images_per_s": round(per_epoch / t_train, 2), "processes": self.ctx.world,
                   "peak_memory_mb": round(runtime.peak_memory_mb(), 1)}
            self.history.append(rec)
            metric = {"auc": val_auc, "accuracy": val_acc, "loss": -val_loss}[select]
            improved = metric > self.best["metric"]
            if self.swa is not None:  # only the average is kept: the first averaged epoch replaces any earlier best
                improved = epoch + 1 >= self.swa_start and (improved or self.best["epoch"] < self.swa_start)
            if improved:
                self.best = {"epoch": epoch + 1, "metric": metric, "name": select}
            rec["best_epoch"] = self.best["epoch"]
            if self.ctx.main:  # the only writer
                if improved:
                    save_atomic(self._state(epoch, full=False), self.ckpt_dir / "best.pt")
                save_atomic(self._state(epoch, full=True), self.ckpt_dir / "last.pt")
                (self.run_dir / "history.json").write_text(json.dumps(self.history, indent=1))
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.3f}", val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}",
                                val_auc=f"{val_auc:.3f}", best="*" if improved else "")
                bar.close()
        if stopped(self.history, self.cfg.train.patience) and self.progress and len(self.history) < epochs:
            print(f"stopped after epoch {len(self.history)}: no better validation {select} for "
                  f"{self.cfg.train.patience} epochs (train.patience); best epoch {self.best['epoch']}")
        return self.best
