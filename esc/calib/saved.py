"""`calibrator=saved`: take the activation scales (and clip ratios) an earlier run wrote to its `scales.pt` instead of
calibrating again, e.g. to evaluate one ESC search on a second evaluation set without repeating it.

The run that wrote the file must have had the same model, quant preset and rules; its PTQ stages are run again
here before the scales are loaded, so they must be the same too, with the same calibration data where they use it
(GPTQ, AdaRound, SmoothQuant's search): the stages are deterministic for a given seed and data, so the loaded scales
meet the weights they were chosen for.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from esc.calib.base import Calibrator, ForwardLoop
from esc.calib.weights import calibrate_weights
from esc.quant.model import load_scales, quantizers


class SavedScalesCalibrator(Calibrator):
    """Loads every scale of `path` (a run's scales.pt) after calibrating the weights from the weights."""

    name = "saved"

    def __init__(self, path: str, weight_method: str = "minmax"):
        super().__init__(weight_method)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"calibrator.path: no scales file at {self.path} (give a run's scales.pt)")

    def compute_range(self, stats, quantizer):
        raise NotImplementedError("calibrator=saved loads its ranges from a file; it computes none")

    def calibrate(self, model: nn.Module, forward_loop: ForwardLoop) -> dict:
        """Calibrate the weights, then load the file; every enabled activation quantizer must be in it."""
        calibrate_weights(model, self.weight_method)
        saved = load_scales(model, self.path)
        missing = [q.name for q in quantizers(model, "activation") if q.enabled and q.name not in saved]
        if missing:
            raise ValueError(f"{self.path}: no scales for {len(missing)} activation quantizer(s) of this model, "
                             f"e.g. {missing[:3]}: was it written with the same model and quant preset?")
        return {}
