"""The model adapter protocol: everything family-specific lives behind it.

An adapter holds a transformers model and its processor and knows how to turn audio (and targets) into a
batch, run the task forward, compute the task loss, predict, and score predictions. Calibration, evaluation
and ESC only ever call these methods, so no other code asks which family it holds.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from esc.models.frontend import apply_frontend


class CheckpointError(FileNotFoundError):
    """A checkpoint could not be found or loaded; the message says what to provide."""


def load_pretrained(loader, source: str, what: str, **kwargs):
    """Call `loader.from_pretrained(source)`, turning hub/network failures into a clear CheckpointError."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        where = "a local directory" if os.path.isdir(source) else "the Hugging Face hub"
        raise CheckpointError(
            f"could not load the {what} {source!r} from {where}"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: {exc}. Provide a local checkpoint directory "
            "(config.json, model weights and preprocessor files, as written by save_pretrained) with "
            "model.path=/path/to/dir, or make the hub reachable."
        ) from exc


class ModelAdapter(ABC):
    """One model family and task: batching, forward, loss, prediction and metric.

    A batch is a dict of tensors made by `collate`; it holds the model inputs and, when targets were
    given, what `loss` needs (`labels`, and for sequence models the teacher-forcing inputs).
    """

    family: ClassVar[str]
    task: ClassVar[str]  # "classification", "ctc" or "seq2seq"
    metric_name: ClassVar[str]  # "accuracy" or "wer"

    def __init__(self, model: nn.Module, processor: Any, sampling_rate: int = 16000):
        self.model = model.eval()
        self.processor = processor
        self.sampling_rate = sampling_rate

    def frontend(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The waveforms as this checkpoint must see them (high-passed when it was trained behind a filter)."""
        return apply_frontend(self.processor, audios, self.sampling_rate)

    @property
    def log_mel_units_per_db(self) -> float | None:
        """How far one dB of power moves a value of this model's input spectrogram (None: the input is not a
        log-mel spectrogram this adapter knows the scale of)."""
        return None

    @property
    def input_window_samples(self) -> int | None:
        """The fixed input length the model always pays for (None: inputs are as long as the audio)."""
        return None

    @abstractmethod
    def collate(self, audios: Sequence[np.ndarray], targets: Sequence | None = None) -> dict[str, torch.Tensor]:
        """Features for a list of mono float32 waveforms at `sampling_rate`, plus encoded targets."""

    @abstractmethod
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Task logits: class logits (B, C), CTC frame logits (B, T, V) or teacher-forced token logits."""

    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The task loss (cross-entropy, CTC, sequence cross-entropy); needs targets in the batch."""

    @abstractmethod
    def predict(self, batch: dict[str, torch.Tensor]) -> list:
        """Predicted labels (classification) or transcripts (recognition)."""

    def predict_and_forward(self, batch: dict[str, torch.Tensor]) -> tuple[list, torch.Tensor]:
        """Predictions and task logits of one batch (families with an expensive shared encoder share it)."""
        with torch.no_grad():
            return self.predict(batch), self.forward(batch)

    def score(self, predictions: Sequence, references: Sequence) -> dict[str, float]:
        """The task metric(s) of predictions against references."""
        from esc.metrics import task_scores

        return task_scores(self.metric_name, predictions, references)

    def to(self, device: str | torch.device) -> "ModelAdapter":
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _on_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
