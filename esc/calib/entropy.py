"""Entropy: the threshold minimising KL(P || Q) between the clipped histogram and its quantized version.

This is TensorRT's calibration, vectorised over all candidate thresholds at once (no Python loop): for a
threshold after `i` bins, P is the first `i` bins of |x| with the clipped tail added to the last of them,
and Q merges those `i` bins into `levels` groups, spreading each group's mass evenly over its non-empty bins.
"""

from __future__ import annotations

import torch

from esc.calib.base import Calibrator, symmetric_or_signed
from esc.calib.stats import ActivationStats
from esc.quant.quantizer import Quantizer


def kl_divergences(hist: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(P||Q) for every candidate bin count i in [levels, len(hist)]; returns (counts i, divergences)."""
    hist = hist.double()
    n = hist.numel()
    counts = torch.arange(levels, n + 1)
    j = torch.arange(n)
    kept = j.unsqueeze(0) < counts.unsqueeze(1)  # [K, n]
    groups = torch.where(kept, (j.unsqueeze(0) * levels) // counts.unsqueeze(1), levels)
    sliced = hist.unsqueeze(0) * kept
    totals = torch.zeros(len(counts), levels + 1, dtype=torch.float64).scatter_add_(1, groups, sliced)
    nonzero = torch.zeros_like(totals).scatter_add_(1, groups, (sliced > 0).double())
    q = torch.where(sliced > 0, totals.gather(1, groups) / nonzero.gather(1, groups).clamp_min(1), 0.0)
    tail = hist.flip(0).cumsum(0).flip(0)  # tail[i] = sum(hist[i:])
    p = sliced.clone()
    last = (counts - 1).unsqueeze(1)
    p.scatter_add_(1, last, torch.cat([tail, tail.new_zeros(1)])[counts].unsqueeze(1))
    p = p / p.sum(dim=1, keepdim=True)
    q = q / q.sum(dim=1, keepdim=True).clamp_min(1e-300)
    terms = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), 0.0)  # q == 0 where p > 0 gives inf
    return counts, terms.sum(dim=1)


class EntropyCalibrator(Calibrator):
    """KL-optimal threshold on the |x| histogram (2^(bits-1) levels, or 2^bits for non-negative data)."""

    name = "entropy"

    def compute_range(self, stats: ActivationStats, quantizer: Quantizer) -> tuple[float, float]:
        unsigned = not quantizer.spec.symmetric and stats.min >= 0.0
        levels = 2 ** (quantizer.bits - (0 if unsigned else 1))
        hist = stats.abs_hist()
        # Thresholds past the last occupied bin would be clipped to the observed max anyway; dropping those
        # empty bins (up to half of them after the range doubled) halves the work.
        occupied = torch.nonzero(hist)
        if occupied.numel() == 0:  # every value was zero (a dead ReLU, silence)
            return symmetric_or_signed(stats, quantizer, stats.amax)
        hist = hist[: int(occupied.max()) + 1]
        if levels >= hist.numel():
            return symmetric_or_signed(stats, quantizer, stats.amax)
        counts, divergences = kl_divergences(hist, levels)
        best = int(counts[torch.argmin(divergences)])
        return symmetric_or_signed(stats, quantizer, min(best * stats.bin_width, stats.amax))
