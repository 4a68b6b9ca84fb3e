"""One statistics pass: running min/max and a widening histogram per static activation quantizer, and the
error of each candidate clip ratio per per-token quantizer (`TokenClipStats`).

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
from esc.quant.uniform_grid import dynamic_rows, fake_quantize_tokens

DEFAULT_BINS = 2048  # bins per sign, as TensorRT's entropy calibration uses
CANDIDATE_RATIOS = torch.linspace(0.4, 1.0, 25)  # per-token clip ratios, in steps of 0.025
MAX_TOKENS = 2048  # per observed tensor: Whisper's encoder sends 1500 tokens per clip through every layer


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


class TokenClipStats:
    """Squared error of each candidate clip ratio over the tokens one per-token quantizer has seen.

    A per-token quantizer's grid spans each token's own range; its only free number is the fraction of that range
    the grid covers (`Quantizer`: the clip ratio). Clipping a token's few extremes buys a finer grid for the rest:
    for Gaussian-like tokens of a few hundred features (a Hadamard-rotated input, say) the 4-bit optimum lies near
    0.8 of the range. `TokenClipStats` observes a quantizer's inputs during the statistics pass and sums, for every
    candidate ratio, the squared error of quantizing the tokens seen; the MSE calibrator (and so ESC's local start)
    takes the ratio of least error, the other calibrators keep the configured one.
    """

    def __init__(self, quantizer: Quantizer):
        self.name, self.axis, self.group_size = quantizer.name, quantizer.axis, quantizer.dynamic_group_size
        self.bits, self.symmetric = quantizer.spec.bits, quantizer.spec.symmetric
        self.errors = torch.zeros(len(CANDIDATE_RATIOS), dtype=torch.float64)
        self.count = 0

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add one input (tokens along every axis but the quantizer's feature axis); NaN or Inf raises."""
        rows = dynamic_rows(x.detach().float(), self.axis, self.group_size, self.name)
        if rows.numel() == 0:
            return
        if not torch.isfinite(rows).all():
            raise NonFiniteActivationError(f"quantizer {self.name!r} received NaN or Inf during calibration; "
                                           "check the input audio and the FP model at this layer")
        rows = rows[::math.ceil(rows.shape[0] / MAX_TOKENS)]  # evenly spaced rows (tokens or groups): bounded cost
        for i, ratio in enumerate(CANDIDATE_RATIOS.tolist()):
            error = fake_quantize_tokens(rows, ratio, self.bits, self.symmetric) - rows
            self.errors[i] += error.pow_(2).sum(dtype=torch.float64)  # float64 sum without a float64 copy
        self.count += rows.shape[0]

    def best_ratio(self) -> float:
        """The candidate ratio of least squared error over every token seen."""
        return float(CANDIDATE_RATIOS[int(torch.argmin(self.errors))])


def collect_statistics(
    model: nn.Module, forward_loop: Callable[[nn.Module], None], bins: int = DEFAULT_BINS,
    clip_ratios: bool = False,
) -> dict[str, ActivationStats | TokenClipStats]:
    """Run `forward_loop(model)` once with every enabled static activation quantizer observing its input.

    With `clip_ratios`, every enabled per-token quantizer observes too, into a `TokenClipStats`. Observing
    quantizers pass their input through unchanged; weight quantizers keep quantizing (they are calibrated from
    the weights beforehand), so the activations are those the quantized model's weights make.
    """
    observed: list[Quantizer] = [q for q in quantizers(model, "activation")
                                 if q.enabled and (clip_ratios or not q.is_dynamic)]
    stats = {q.name: TokenClipStats(q) if q.is_dynamic else ActivationStats(q.name, bins) for q in observed}
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
