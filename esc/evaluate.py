"""Score a model on the evaluation split with `lightning.Trainer.test`, and measure fidelity to the FP model.

Fidelity needs no labels beyond the teacher-forcing targets: on every batch the quantized model's output
distribution is compared with the FP model's, obtained from the very same model with every quantizer switched off
and the parameters PTQ stages rewrote swapped back (`esc.quant.reference`), so no second copy of the model runs.
The positions compared are those ESC's fitness uses (`esc.calib.fitness.prediction_mask`), so the two KL figures
agree.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import lightning as L
import torch
from torch.nn import functional as F

from esc.calib.fitness import prediction_mask
from esc.quant.reference import fp_reference
from esc.models.base import ModelAdapter


def kl_sum(fp_logits: torch.Tensor, q_logits: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Sum over masked positions of KL(P_fp || P_quantized) in nats, and the number of positions."""
    log_p = F.log_softmax(fp_logits.float(), dim=-1)[mask]
    log_q = F.log_softmax(q_logits.float(), dim=-1)[mask]
    return float((log_p.exp() * (log_p - log_q)).sum()), int(mask.sum())


@dataclass
class Evaluation:
    """What one evaluation produced: task scores, predictions by clip name and fidelity to the FP model."""

    scores: dict[str, float]
    predictions: dict[str, str]
    seconds: float
    fidelity_kl: float | None = None
    agreement: float | None = None


class Evaluator(L.LightningModule):
    """Predicts every evaluation batch and scores the split at the end of `Trainer.test`.

    With `fp_predictions` (clip name -> FP prediction), it also measures the mean KL divergence from the FP output
    distribution (`fidelity_kl`) and the fraction of predictions identical to the FP ones (`agreement`).
    """

    def __init__(self, adapter: ModelAdapter, prefix: str, fp_predictions: Mapping[str, str] | None = None):
        super().__init__()
        self.adapter = adapter
        self.model = adapter.model  # registered, so Lightning places and switches the model's mode
        self.prefix = prefix
        self.fp_predictions = fp_predictions
        self._predictions: dict[str, str] = {}
        self._references: dict[str, str] = {}
        self._kl, self._positions = 0.0, 0
        self._start = 0.0
        self.result: Evaluation | None = None

    def on_test_epoch_start(self) -> None:
        self._predictions, self._references, self._kl, self._positions = {}, {}, 0.0, 0
        self._start = time.perf_counter()

    def test_step(self, batch: Mapping, batch_idx: int) -> None:
        inputs = batch["inputs"]
        if self.fp_predictions is None:
            predictions = self.adapter.predict(inputs)
        else:
            predictions, q_logits = self.adapter.predict_and_forward(inputs)
        self._predictions.update(zip(batch["names"], predictions))
        self._references.update(zip(batch["names"], batch["targets"]))
        if self.fp_predictions is not None:
            with fp_reference(self.model):
                fp_logits = self.adapter.forward(inputs)
            kl, positions = kl_sum(fp_logits, q_logits, prediction_mask(self.adapter, inputs, q_logits))
            self._kl += kl
            self._positions += positions

    def on_test_epoch_end(self) -> None:
        names = list(self._predictions)
        scores = self.adapter.score([self._predictions[n] for n in names], [self._references[n] for n in names])
        result = Evaluation(scores, dict(self._predictions), time.perf_counter() - self._start)
        if self.fp_predictions is not None:
            result.fidelity_kl = self._kl / max(self._positions, 1)
            result.agreement = sum(self._predictions[n] == self.fp_predictions.get(n) for n in names) / len(names)
            scores = scores | {"fidelity_kl": result.fidelity_kl, "agreement": result.agreement}
        self.log_dict({f"{self.prefix}/{k}": float(v) for k, v in scores.items()}, batch_size=len(names))
        self.result = result


def evaluate(adapter: ModelAdapter, trainer: L.Trainer, loader, prefix: str,
             fp_predictions: Mapping[str, str] | None = None) -> Evaluation:
    """Run `trainer.test` over `loader` and return the evaluation (see `Evaluator`)."""
    evaluator = Evaluator(adapter, prefix, fp_predictions)
    trainer.test(evaluator, dataloaders=loader, verbose=False)
    return evaluator.result
