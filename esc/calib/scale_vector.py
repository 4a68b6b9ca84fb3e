"""The scales ESC searches: every activation quantizer of a model (or block), as log-multipliers of a start.

A static quantizer contributes its scale; a per-token (dynamic) one its clip ratio, the fraction of each token's
range its grid covers (`Quantizer`), so W4A4 presets with per-token inputs still leave every input to the search.
A search can be narrowed to the quantizers whose names match given globs; the others keep their start.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from esc.quant.model import quantizers
from esc.quant.quantizer import Quantizer


def matches(name: str, globs: Sequence[str] | None) -> bool:
    """Whether a quantizer name matches one of `globs` (None: every name does)."""
    return globs is None or any(fnmatch.fnmatchcase(name, g) for g in globs)


def unmatched_globs(model: nn.Module, globs: Sequence[str]) -> list[str]:
    """The globs that match no enabled activation quantizer of `model` (a typo would silently search nothing)."""
    names = [q.name for q in quantizers(model, "activation") if q.enabled]
    return [g for g in globs if not any(matches(n, [g]) for n in names)]


class ScaleVector:
    """The searched scales: one log-multiplier per calibrated activation quantizer, applied in place.

    Writing into the existing scale buffers (no new tensors, zero points untouched) keeps a candidate switch
    to a few hundred scalar copies; weight quantizers and their cached fake-quantized weights are untouched.
    """

    def __init__(self, model: nn.Module, include: Sequence[str] | None = None):
        """Every enabled, calibrated activation quantizer of `model`; with `include`, only those whose name
        matches one of its globs."""
        self.quantizers: list[Quantizer] = [q for q in quantizers(model, "activation")
                                            if q.enabled and q.is_calibrated and matches(q.name, include)]
        self.start = [q.scale.clone() for q in self.quantizers]

    @property
    def names(self) -> list[str]:
        return [q.name for q in self.quantizers]

    def __len__(self) -> int:
        return len(self.quantizers)

    def fingerprint(self) -> np.ndarray:
        """The local start scales, to recognise a checkpoint made for this model and data."""
        return np.array([s.double().sum().item() for s in self.start])

    @torch.no_grad()
    def write(self, log_multipliers: np.ndarray) -> None:
        """Set every scale to its local start times exp(log-multiplier)."""
        for q, start, m in zip(self.quantizers, self.start, np.exp(log_multipliers)):
            torch.mul(start, float(m), out=q.scale)
