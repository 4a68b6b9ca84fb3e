"""MinMax: the full observed range; nothing is clipped."""

from __future__ import annotations

from esc.calib.base import Calibrator
from esc.calib.stats import ActivationStats
from esc.quant.quantizer import Quantizer


class MinMaxCalibrator(Calibrator):
    """Range = observed [min, max] (symmetric: +-max|x|)."""

    name = "minmax"

    def compute_range(self, stats: ActivationStats, quantizer: Quantizer) -> tuple[float, float]:
        if quantizer.spec.symmetric:
            return -stats.amax, stats.amax
        return stats.min, stats.max
