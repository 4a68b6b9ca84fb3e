"""The PTQ stage protocol: three hooks around quantizer insertion and calibration, each returning a report.

A run calls every stage's `before_quantize` on the FP model (transformations that must see FP weights and
activations: SmoothQuant, rotation), then inserts quantizers and calibrates the weight ranges, then calls every
stage's `after_weight_calibration` (stages that rewrite weights on the calibrated grid: GPTQ, AdaRound), then
runs the activation calibrator, which keeps the weight grid (`calibrate_weights` does not overwrite it), then
calls every stage's `after_calibration` (stages that need the whole quantized model: bias correction).
Calibration data reaches a stage as the adapter's batches; stages know nothing about data sets or families.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from esc.models.base import ModelAdapter

PHASES = ("before_quantize", "after_weight_calibration", "after_calibration")


class PTQStage:
    """A post-training quantization step. Override one or both hooks; a hook that returns None does nothing.

    A hook returns a report: a dict with at least `layers`, mapping a layer (or layer group) name to its
    reconstruction errors; `run_stages` adds the stage's name, phase and seconds.
    """

    name: str = "stage"

    def before_quantize(self, adapter: ModelAdapter, batches: Sequence[dict]) -> dict | None:
        """Transform the FP model in place (no quantizers yet)."""
        return None

    def after_weight_calibration(self, adapter: ModelAdapter, batches: Sequence[dict]) -> dict | None:
        """Rewrite weights on their quantizers' calibrated grids (activation quantizers not yet calibrated)."""
        return None

    def after_calibration(self, adapter: ModelAdapter, batches: Sequence[dict]) -> dict | None:
        """Adjust the fully calibrated model (weights and activation scales fixed) in place."""
        return None


def run_batches(adapter: ModelAdapter, batches: Sequence[dict]) -> None:
    """Run every batch through the adapter's task forward, without gradients."""
    with torch.no_grad():
        for batch in batches:
            adapter.forward(batch)


def tied_parameters(model: nn.Module) -> set[int]:
    """Storage pointers of parameters that more than one module holds (e.g. Whisper's output projection and
    token embedding): rewriting such a weight for one layer would silently change another."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[p.data_ptr()] = seen.get(p.data_ptr(), 0) + 1
    return {ptr for ptr, count in seen.items() if count > 1}


