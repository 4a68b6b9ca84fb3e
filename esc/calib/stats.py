"""One statistics pass: running min/max and a widening histogram per static activation quantizer.

Every standard calibrator (minmax, percentile, MSE, entropy) is a function of these statistics, so
comparing calibrators never re-runs the data. The histogram is symmetric around zero with a fixed number of
bins; when a batch exceeds its range the range doubles and neighbouring bins merge pairwise, which is exact
(no re-interpolation) because the old bin edges are a subset of the new ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from esc.quant.model import quantizers
from esc.quant.quantizer import Quantizer

DEFAULT_BINS = 2048  # bins per sign, as TensorRT's entropy calibration uses


class NonFiniteActivationError(ValueError):
    """An activation holds NaN or Inf during calibration; the message names the quantizer."""


class ActivationStats:
    """Running min/max and a signed histogram of everything one quantizer has seen.

    `hist` has `2 * bins` bins of width `range / bins` covering [-range, range]; bin `bins` starts at zero.
    """

    def __init__(self, name: str, bins: int = DEFAULT_BINS):
        if bins < 2 or bins & (bins - 1):
            raise ValueError(f"histogram bins must be a power of two >= 2, got {bins}")
        self.name, self.bins = name, bins
        self.min = float("inf")
        self.max = float("-inf")
        self.count = 0
        self.range = 0.0
        self.hist = torch.zeros(2 * bins, dtype=torch.float64)
        self._pending_zeros = 0  # values seen while every value so far was exactly zero

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add one activation tensor; raise NonFiniteActivationError on NaN or Inf."""
        x = x.detach().float()
        if x.numel() == 0:
            return
        lo, hi = torch.aminmax(x)
        lo, hi = lo.item(), hi.item()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise NonFiniteActivationError(
                f"quantizer {self.name!r} received NaN or Inf during calibration (min={lo}, max={hi}); "
                "check the input audio and the FP model at this layer"
            )
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += x.numel()
        amax = max(-lo, hi)
        if amax == 0.0 and self.range == 0.0:
            self._pending_zeros += x.numel()
            return
        if self.range == 0.0:
            self.range = amax
            self.hist[self.bins] += self._pending_zeros
        while amax > self.range:
            self._double_range()
        counts = torch.histc(x, bins=2 * self.bins, min=-self.range, max=self.range)
        self.hist += counts.to(self.hist.device, torch.float64)  # activations may live on a GPU

    def _double_range(self) -> None:
        half = self.bins // 2
        merged = self.hist.view(-1, 2).sum(dim=1)  # 2*bins -> bins, bin edges stay aligned
        self.hist.zero_()
        self.hist[half : half + self.bins] = merged
        self.range *= 2.0

    @property
    def bin_width(self) -> float:
        return self.range / self.bins

    def abs_hist(self) -> torch.Tensor:
        """Histogram of |x|: `bins` bins of `bin_width` starting at zero."""
        return self.hist[self.bins :] + self.hist[: self.bins].flip(0)

    @property
    def amax(self) -> float:
        return max(-self.min, self.max, 0.0)


def collect_statistics(
    model: nn.Module, forward_loop: Callable[[nn.Module], None], bins: int = DEFAULT_BINS
) -> dict[str, ActivationStats]:
    """Run `forward_loop(model)` once with every enabled static activation quantizer observing its input.

    Observing quantizers pass their input through unchanged; weight quantizers keep quantizing (they are
    calibrated from the weights beforehand), so the activations are those the quantized model's weights make.
    """
    observed: list[Quantizer] = [q for q in quantizers(model, "activation") if q.enabled and not q.is_dynamic]
    stats = {q.name: ActivationStats(q.name, bins) for q in observed}
    for q in observed:
        q.observer = stats[q.name]
    try:
        with torch.no_grad():
            forward_loop(model)
    finally:
        for q in observed:
            q.observer = None
    empty = [name for name, s in stats.items() if s.count == 0]
    if stats and len(empty) == len(stats):
        raise ValueError("calibration saw no data: the calibration set is empty or the forward loop ran no batch")
    return stats
