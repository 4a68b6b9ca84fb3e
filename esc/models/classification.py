"""Audio classification (AST, wav2vec2 sequence classification): logits, cross-entropy, arg-max labels."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from esc.models.base import ModelAdapter


class ClassificationAdapter(ModelAdapter):
    """Targets are label names (str) or ids (int); predictions are label names."""

    task = "classification"
    metric_name = "accuracy"

    @property
    def labels(self) -> list[str]:
        id2label = self.model.config.id2label
        return [str(id2label[i]) for i in range(len(id2label))]

    def label_id(self, target) -> int:
        """The class index of a label name or index; unknown labels raise naming the valid ones."""
        labels = self.labels
        if isinstance(target, (int, np.integer)) and 0 <= int(target) < len(labels):
            return int(target)
        if str(target) in labels:
            return labels.index(str(target))
        raise ValueError(f"label {target!r} is not one of the model's labels {labels}")

    @abstractmethod
    def features(self, audios: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Model inputs for a list of waveforms (family specific)."""

    def collate(self, audios, targets=None):
        batch = self.features(self.frontend(audios))
        if targets is not None:
            batch["labels"] = torch.tensor([self.label_id(t) for t in targets])
        return batch

    def _inputs(self, batch):
        return {k: v for k, v in self._on_device(batch).items() if k != "labels"}

    def forward(self, batch):
        return self.model(**self._inputs(batch)).logits

    def loss(self, batch):
        return F.cross_entropy(self.forward(batch), batch["labels"].to(self.device))

    @torch.no_grad()
    def predict(self, batch):
        labels = self.labels
        return [labels[i] for i in self.forward(batch).argmax(dim=-1).tolist()]
