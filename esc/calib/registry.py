"""Calibrators by name."""

from __future__ import annotations

from esc.calib.base import Calibrator
from esc.calib.entropy import EntropyCalibrator
from esc.calib.esc import ESCCalibrator
from esc.calib.minmax import MinMaxCalibrator
from esc.calib.mse import MSECalibrator
from esc.calib.percentile import PercentileCalibrator
from esc.calib.saved import SavedScalesCalibrator

CALIBRATORS: dict[str, type[Calibrator]] = {
    c.name: c for c in (MinMaxCalibrator, PercentileCalibrator, MSECalibrator, EntropyCalibrator, ESCCalibrator,
                      SavedScalesCalibrator)
}


def make_calibrator(name: str, **options) -> Calibrator:
    """Build a calibrator by name; an unknown name raises a ValueError listing the valid ones."""
    if name not in CALIBRATORS:
        raise ValueError(f"unknown calibrator {name!r}; valid: {sorted(CALIBRATORS)}")
    return CALIBRATORS[name](**options)
