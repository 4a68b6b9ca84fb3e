"""Task-level fitness of a whole quantized model on calibration batches (lower is better), for ESC.

`kl` (the default, label-free) is the divergence KL(FP || quantized) between output distributions, averaged
over the positions that carry a prediction: one per clip (classification), every non-padded frame (CTC), and
every teacher-forced token whose label is not -100 (sequence-to-sequence). The FP distributions are computed
once, on the first call, with every quantizer switched off, and cached: candidates never recompute them.
`task_loss` is the adapter's own loss (needs targets in the batches), averaged over batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from esc.models.base import ModelAdapter
from esc.quant.reference import fp_reference

FITNESS_KINDS = ("kl", "task_loss")


def prediction_mask(adapter: ModelAdapter, batch: dict, logits: torch.Tensor) -> torch.Tensor:
    """Boolean mask over the leading dimensions of `logits` marking positions that carry a prediction."""
    if adapter.task == "classification":
        return torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    if adapter.task == "seq2seq":
        return batch["labels"].to(logits.device) != -100
    frames = torch.arange(logits.shape[1], device=logits.device)
    if "attention_mask" not in batch:
        return frames.expand(logits.shape[:2]) >= 0
    # CTC frames are downsampled samples: padding is masked through the model's own length formula.
    lengths = adapter.model._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1)).to(logits.device)
    return frames.unsqueeze(0) < lengths.unsqueeze(1)


class Fitness:
    """Callable `fitness(model, subset=None) -> float` over `batches` (or the batches indexed by `subset`).

    `model` must be the adapter's model: the fitness runs `adapter.forward`, and the check catches a harness
    that passes a copy (whose scales the search would never see).
    """

    def __init__(self, adapter: ModelAdapter, batches: Sequence[dict], kind: str = "kl"):
        if kind not in FITNESS_KINDS:
            raise ValueError(f"unknown fitness {kind!r}; valid: {FITNESS_KINDS}")
        if len(batches) == 0:
            raise ValueError("ESC fitness: the calibration split is empty (no batches to score candidates on)")
        if kind == "task_loss" and any("labels" not in b for b in batches):
            raise ValueError("ESC fitness 'task_loss' needs targets (labels) in every calibration batch")
        self.adapter, self.batches, self.kind = adapter, list(batches), kind
        self._targets: list[tuple[torch.Tensor, torch.Tensor, float]] | None = None

    def __len__(self) -> int:
        return len(self.batches)

    @torch.no_grad()
    def __call__(self, model: nn.Module, subset: Sequence[int] | None = None) -> float:
        if model is not self.adapter.model:
            raise ValueError("ESC fitness: the model scored must be the adapter's model")
        indices = range(len(self.batches)) if subset is None else subset
        if self.kind == "task_loss":
            return sum(float(self.adapter.loss(self.batches[i])) for i in indices) / len(indices)
        total, count = 0.0, 0
        for i in indices:
            kl, positions = self.divergence(i, self.adapter.forward(self.batches[i]))
            total, count = total + kl, count + positions
        return total / count

    @torch.no_grad()
    def fp_targets(self) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """Per batch: FP probabilities at the predicted positions, the position mask, and sum p log p."""
        if self._targets is None:
            targets = []
            with fp_reference(self.adapter.model):
                for batch in self.batches:
                    logits = self.adapter.forward(batch)
                    mask = prediction_mask(self.adapter, batch, logits)
                    log_p = F.log_softmax(logits[mask].float(), dim=-1)
                    probs = log_p.exp()
                    targets.append((probs, mask, float(torch.xlogy(probs, probs).sum())))
            self._targets = targets
        return self._targets

    @torch.no_grad()
    def divergence(self, index: int, logits: torch.Tensor) -> tuple[float, int]:
        """KL(FP || q) summed over the predicted positions of batch `index`, and how many positions there are.

        `logits` are one candidate's task logits of that batch (as `adapter.forward` returns them for it): the
        term `__call__` sums per batch, for callers that run the forward themselves (esc.calib.population).
        """
        probs, mask, neg_entropy = self.fp_targets()[index]
        log_q = F.log_softmax(logits[mask].float(), dim=-1)
        # KL(p || q) = sum p log p - sum p log q; the first term is cached with p, the second is one dot
        # product (no (positions, vocabulary) temporary: Whisper's vocabulary is 51865 wide).
        return neg_entropy - float(torch.dot(probs.flatten(), log_q.flatten())), probs.shape[0]


def make_fitness(adapter: ModelAdapter, batches: Sequence[dict], kind: str = "kl") -> Fitness:
    """The ESC fitness of `adapter.model` on calibration `batches` (collated by the adapter): kl or task_loss."""
    return Fitness(adapter, batches, kind)
