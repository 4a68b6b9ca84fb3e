"""MSE: the clipping range that minimises the expected squared quantization error of the histogram.

The error of each candidate range is evaluated exactly (real rounding and clipping) on a few points spread
evenly inside every occupied histogram bin, weighted by the bin's count, so narrow bins near zero (which
round to zero, not to a uniform error) and the clipped tail are both counted correctly.
"""

from __future__ import annotations

import torch

from esc.calib.base import Calibrator
from esc.calib.stats import ActivationStats
from esc.quant.quantizer import Quantizer
from esc.quant.uniform_grid import integer_range, range_to_qparams

POINTS_PER_BIN = 4


def histogram_points(stats: ActivationStats) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample points inside every non-empty bin of the signed histogram and their weights."""
    w = stats.bin_width
    occupied = torch.nonzero(stats.hist).squeeze(1)
    offsets = (torch.arange(POINTS_PER_BIN, dtype=torch.float64) + 0.5) / POINTS_PER_BIN
    points = (occupied.double().unsqueeze(1) + offsets) * w - stats.range
    weights = (stats.hist[occupied] / POINTS_PER_BIN).unsqueeze(1).expand_as(points)
    return points.reshape(-1), weights.reshape(-1)


def quantization_error(points, weights, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool):
    """Weighted squared error of fake-quantizing `points` with each candidate range (lo[k], hi[k])."""
    qmin, qmax = integer_range(bits, symmetric)
    scale, zero_point = range_to_qparams(lo.float(), hi.float(), bits, symmetric)
    scale, zero_point = scale.double().unsqueeze(1), zero_point.double().unsqueeze(1)
    q = torch.clamp(torch.round(points / scale) + zero_point, qmin, qmax)
    return (((q - zero_point) * scale - points) ** 2 * weights).sum(dim=1)


class MSECalibrator(Calibrator):
    """Search `num_candidates` ranges, log-spaced from `min_fraction` of the full range to all of it."""

    name = "mse"
    chooses_clip_ratio = True  # per-token quantizers: the clip ratio of least squared error (TokenClipStats)

    def __init__(self, num_candidates: int = 256, min_fraction: float = 1e-3, weight_method: str = "minmax"):
        super().__init__(weight_method)
        if num_candidates < 1 or not 0.0 < min_fraction <= 1.0:
            raise ValueError("mse calibrator: num_candidates must be >= 1 and min_fraction in (0, 1]")
        self.fractions = torch.logspace(torch.log10(torch.tensor(min_fraction)), 0.0, num_candidates,
                                        dtype=torch.float64)

    def compute_range(self, stats: ActivationStats, quantizer: Quantizer) -> tuple[float, float]:
        if quantizer.spec.symmetric:
            lo, hi = -stats.amax * self.fractions, stats.amax * self.fractions
        else:
            lo, hi = min(stats.min, 0.0) * self.fractions, max(stats.max, 0.0) * self.fractions
        points, weights = histogram_points(stats)
        errors = quantization_error(points, weights, lo, hi, quantizer.bits, quantizer.spec.symmetric)
        best = int(torch.argmin(errors))
        return float(lo[best]), float(hi[best])
