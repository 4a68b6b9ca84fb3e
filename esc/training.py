"""Training small FP models from scratch (keyword classifiers) with Lightning.

The study's claims need trained models (random weights have none of the activation structure that makes audio
hard to quantize), and no AST or wav2vec2 weights can be had offline, so small ones are trained here on the
generated keyword set. Every clip goes through the adapter's `collate` once (feature extraction dominated the epoch
time otherwise); batches of the cached inputs are then augmented per step in the input domain (`esc.augment`),
optionally mixed (mixup), and scored with label-smoothed cross-entropy on the adapter's `forward` logits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

from esc.augment import AugmentConfig, augment_batch
from esc.data.datamodule import Example
from esc.models.base import ModelAdapter

log = logging.getLogger(__name__)


def cache_inputs(adapter: ModelAdapter, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """The adapter's batch (model inputs and `labels`) for every example at once, one row per example.

    One call rather than chunks, so inputs padded to the longest clip (wav2vec2) share one length.
    """
    return adapter.collate([e.audio for e in examples], [e.target for e in examples])


class CachedInputs(torch.utils.data.Dataset):
    """Rows of a cached batch; the default DataLoader collate stacks them back into batches."""

    def __init__(self, inputs: dict[str, torch.Tensor]):
        self.inputs = inputs
        self.size = len(inputs["labels"])

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.inputs.items()}


class ClassifierTraining(L.LightningModule):
    """Cross-entropy training of an adapter's classifier; validation accuracy logged as `val_accuracy`.

    `mixup` is the Beta(alpha, alpha) parameter of mixup (0: off): a batch's float inputs are blended with a
    shuffled copy and the loss with both label sets in the same proportion.
    """

    def __init__(self, adapter: ModelAdapter, lr: float, weight_decay: float, warmup_fraction: float = 0.1,
                 augment: AugmentConfig | None = None, label_smoothing: float = 0.0, mixup: float = 0.0,
                 seed: int = 0):
        super().__init__()
        self.adapter, self.model = adapter, adapter.model
        self.lr, self.weight_decay, self.warmup_fraction = lr, weight_decay, warmup_fraction
        self.augment, self.label_smoothing, self.mixup = augment or AugmentConfig(), label_smoothing, mixup
        self.generator = torch.Generator().manual_seed(seed)
        self.mixup_rng = np.random.default_rng(seed)  # torch's Beta takes no generator; the global RNG is not ours
        self.units_per_db = adapter.log_mel_units_per_db
        if self.augment.tilt and self.units_per_db is None:
            raise ValueError(f"augment.tilt tilts log-mel spectrograms; the {adapter.family} model's inputs are not "
                             "one (set augment.tilt=0)")

    def on_fit_start(self) -> None:
        # Adapters hold their model in eval mode (for calibration and evaluation); training needs dropout on.
        self.model.train()

    def _cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def training_step(self, batch, batch_idx):
        batch = augment_batch(batch, self.augment, self.generator, self.units_per_db)
        labels = batch["labels"]
        if self.mixup:
            share = float(self.mixup_rng.beta(self.mixup, self.mixup))
            order = torch.randperm(len(labels), generator=self.generator)
            batch = {k: share * v + (1 - share) * v[order] if torch.is_floating_point(v) else v
                     for k, v in batch.items()}
            logits = self.adapter.forward(batch)
            loss = share * self._cross_entropy(logits, labels) + (1 - share) * self._cross_entropy(logits,
                                                                                                 labels[order])
        else:
            loss = self._cross_entropy(self.adapter.forward(batch), labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self.adapter.forward(batch)
        correct = (logits.argmax(-1) == batch["labels"].to(logits.device)).float()
        self.log("val_accuracy", correct.mean(), batch_size=len(correct))

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.lr, total_steps=total,
                                                       pct_start=self.warmup_fraction)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class EpochLog(L.Callback):
    """One log line per epoch, with the seconds since training started (a progress bar does not survive in a log
    file)."""

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        loss = metrics.get("train_loss")
        log.info("epoch %d/%d: train_loss %s val_accuracy %.4f (%.0f s)", trainer.current_epoch + 1,
                 trainer.max_epochs, "-" if loss is None else f"{float(loss):.4f}", float(metrics["val_accuracy"]),
                 time.perf_counter() - self.start)
