"""The calibrator protocol: collect statistics, compute each quantizer's range, reset.

Calibration data reaches a calibrator only through a `forward_loop(model)` callable, so calibrators know
nothing about data sets or model families. Weights are calibrated first, from the weights themselves.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from esc.calib.stats import ActivationStats, TokenClipStats, collect_statistics
from esc.calib.weights import calibrate_weights
from esc.quant.model import quantizers
from esc.quant.quantizer import Quantizer

log = logging.getLogger(__name__)

ForwardLoop = Callable[[nn.Module], None]


class Calibrator(ABC):
    """Sets the static activation scales of a quantized model.

    Subclasses implement `compute_range`; ESC also overrides `calibrate` to refine the ranges globally.
    """

    name: ClassVar[str]
    chooses_clip_ratio: ClassVar[bool] = False  # per-token quantizers' clip ratio from the data (TokenClipStats)

    def __init__(self, weight_method: str = "minmax"):
        self.weight_method = weight_method
        self.stats: dict[str, ActivationStats] = {}

    def collect(self, model: nn.Module, forward_loop: ForwardLoop) -> dict[str, ActivationStats]:
        """One statistics pass over the calibration data (kept for `compute_range` and reuse)."""
        self.stats = collect_statistics(model, forward_loop, clip_ratios=self.chooses_clip_ratio)
        return self.stats

    @abstractmethod
    def compute_range(self, stats: ActivationStats, quantizer: Quantizer) -> tuple[float, float]:
        """The clipping range [lo, hi] for one quantizer from its statistics."""

    def apply(self, model: nn.Module, stats: dict[str, ActivationStats]) -> None:
        """Compute and set the range of every static activation quantizer that saw data.

        A log2-grid quantizer takes the seen maximum from every calibrator (their error models are for uniform
        grids; its levels already reach 2^(2^b - 2) below the top); ESC still searches its scale like any other.
        A per-token quantizer observed for its clip ratio (`chooses_clip_ratio`) takes the ratio of least error.
        """
        for q in quantizers(model, "activation"):
            s = stats.get(q.name)
            if s is None:
                continue
            if s.count == 0:
                log.warning("quantizer %s saw no calibration data; it stays uncalibrated", q.name)
                continue
            if isinstance(s, TokenClipStats):
                q.set_qparams(torch.tensor(s.best_ratio()), q.zero_point)
            else:
                q.set_range(*((0.0, s.max) if q.spec.grid == "log2" else self.compute_range(s, q)))

    def calibrate(self, model: nn.Module, forward_loop: ForwardLoop) -> dict[str, ActivationStats]:
        """Calibrate weights, collect activation statistics once, set every activation range."""
        calibrate_weights(model, self.weight_method)
        stats = self.collect(model, forward_loop)
        self.apply(model, stats)
        return stats

    def reset(self) -> None:
        """Forget collected statistics."""
        self.stats = {}


def symmetric_or_signed(stats: ActivationStats, quantizer: Quantizer, threshold: float) -> tuple[float, float]:
    """Turn a magnitude threshold into a range: [-t, t] when symmetric, else clipped to the seen min/max."""
    if quantizer.spec.symmetric:
        return -threshold, threshold
    return max(stats.min, -threshold), min(stats.max, threshold)
