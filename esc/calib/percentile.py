"""Percentile: clip at the p-th percentile of |x| (symmetric) or at the two tails (asymmetric)."""

from __future__ import annotations

import torch

from esc.calib.base import Calibrator
from esc.calib.stats import ActivationStats
from esc.quant.quantizer import Quantizer


def _first_bin_reaching(cdf: torch.Tensor, fraction: float) -> int:
    return int(torch.searchsorted(cdf, torch.tensor([fraction * cdf[-1].item()], dtype=cdf.dtype)).item())


class PercentileCalibrator(Calibrator):
    """Range from histogram percentiles; `percentile` in (0, 100], e.g. 99.99."""

    name = "percentile"

    def __init__(self, percentile: float = 99.99, weight_method: str = "minmax"):
        super().__init__(weight_method)
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile = float(percentile)

    def compute_range(self, stats: ActivationStats, quantizer: Quantizer) -> tuple[float, float]:
        p = self.percentile / 100.0
        w = stats.bin_width
        if quantizer.spec.symmetric:
            cdf = stats.abs_hist().cumsum(0)
            threshold = min((_first_bin_reaching(cdf, p) + 1) * w, stats.amax)
            return -threshold, threshold
        cdf = stats.hist.cumsum(0)
        lower = _first_bin_reaching(cdf, 1.0 - p) * w - stats.range  # lower edge of the lower-tail bin
        upper = (_first_bin_reaching(cdf, p) + 1) * w - stats.range  # upper edge of the upper-tail bin
        return max(lower, stats.min), min(upper, stats.max)
