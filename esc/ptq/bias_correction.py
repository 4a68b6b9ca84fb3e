"""Empirical bias correction: give each quantized layer's outputs the per-channel means of the FP model's.

Quantization error is not zero-mean. Post-GELU activations are the clearest case: most values are far smaller
than a per-tensor 8-bit step (in the trained wav2vec2 keyword model's convolutional feature encoder the median
magnitude is 0.03-0.05 against a step of 0.12-0.21), so they round to zero together and shift every output
channel of the next layer by a systematic offset, which the following layers then amplify. This stage measures,
on the calibration batches, each layer's per-output-channel mean in the FP model and in the quantized one, and
adds the difference to the layer's bias (creating a zero bias where the layer had none). It needs the activation
scales, so it runs after the activation calibrator (phase `after_calibration`).

The layers are corrected in the order they run, each measured with the corrections of the layers before it in
place: one pass over the batches per layer (plus one for the FP means and one for the report), and afterwards every
corrected layer's channel means on the calibration batches equal the FP model's. Correcting every layer from a
single pass is not offered: each layer would also be corrected for the offset its inputs inherit from layers that
are corrected themselves, and on the real Whisper tiny.en at W4A8 (rotation+GPTQ) that double correction took the
fidelity KL from 0.058 to 2.48 and WER from 10% to 92%.

A mean offset is only the average of an error that depends on the signal (silent frames round to zero, speech frames
do not), so correcting a layer's mean can make the model worse downstream. On the retrained wav2vec2 keyword model
at W8A8 (MSE), correcting all layers raised the held-out fidelity KL from 0.109 to 0.208, correcting only the feature
encoder's convolutions to 0.457, while correcting only the feature projection lowered it to 0.056. With `guard`
(the default) a correction is kept only if it does not raise the label-free KL of the whole model's outputs to the
FP model's on the calibration batches (ESC's default fitness): one more pass per layer, decided on calibration data
only.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

from esc.calib.fitness import Fitness
from esc.models.base import ModelAdapter
from esc.ptq.base import PTQStage, run_batches
from esc.quant.model import QuantizedLayer
from esc.quant.reference import fp_reference, keep_fp


class BiasCorrection(PTQStage):
    """Per-channel output-mean correction of every quantized Linear/Conv layer whose name matches `match`."""

    name = "bias_correction"

    def __init__(self, match: str = "*", max_batches: int | None = None, guard: bool = True):
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"bias_correction: max_batches must be >= 1 or null, got {max_batches}")
        self.match, self.max_batches, self.guard = match, max_batches, guard

    def after_calibration(self, adapter: ModelAdapter, batches: Sequence[dict]) -> dict:
        """Correct the biases in place; report each layer's mean |channel offset| before and after and, with
        `guard`, whether its correction was kept and the calibration KL it left."""
        batches = list(batches)[: self.max_batches]
        if not batches:
            raise ValueError("bias_correction: no calibration batches")
        layers = correctable_layers(adapter.model, self.match)
        if not layers:
            raise ValueError(f"bias_correction: no quantized layer matches {self.match!r}")
        with fp_reference(adapter.model):
            fp_means = channel_means(adapter, batches, layers)
        fitness = Fitness(adapter, batches) if self.guard else None
        kl = fitness(adapter.model) if fitness else None
        reports = {"kl_before": kl} if fitness else {}
        layer_reports = {}
        for name, layer in layers.items():
            offset = fp_means[name] - channel_means(adapter, batches, {name: layer})[name]
            saved = None if layer.bias is None else layer.bias.detach().clone()
            add_to_bias(layer, offset)
            layer_reports[name] = {"offset_before": float(offset.abs().mean())}
            if fitness:
                corrected = fitness(adapter.model)
                kept = corrected <= kl
                if kept:
                    kl = corrected
                else:  # back to the bias it had (an added zero bias changes no output)
                    with torch.no_grad():
                        layer.bias.copy_(torch.zeros_like(layer.bias) if saved is None else saved)
                layer_reports[name].update(kept=kept, kl=kl)
        after = channel_means(adapter, batches, layers)
        for name in layers:
            layer_reports[name]["offset_after"] = float((fp_means[name] - after[name]).abs().mean())
        if fitness:
            reports["kl_after"] = kl
        return {"batches": len(batches), **reports, "layers": layer_reports}


def correctable_layers(model: nn.Module, match: str) -> dict[str, nn.Module]:
    """Quantized layers (in registration order, which is the order they run in these models) with a quantizer on
    and calibrated: the others produce exactly their FP outputs up to earlier layers' errors."""
    layers = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, QuantizedLayer) or not fnmatch.fnmatchcase(name, match):
            continue
        active = [q for q in (layer.input_quantizer, layer.weight_quantizer) if q.enabled]
        if not active:
            continue
        for q in active:
            if not q.is_calibrated:
                raise RuntimeError(f"{q.name} is not calibrated; bias correction runs after activation calibration")
        layers[name] = layer
    return layers


def channel_means(adapter: ModelAdapter, batches: Sequence[dict],
                  layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Each layer's output mean per channel (axis 1 of a convolution's output, the last axis of a Linear's) over
    every batch and position, in float64."""
    sums: dict[str, list] = {name: [0.0, 0] for name in layers}

    def hook_for(name: str):
        def hook(layer, args, output):
            out = output.detach().double()
            axis = 1 if isinstance(layer, (nn.Conv1d, nn.Conv2d)) else out.dim() - 1
            dims = [d for d in range(out.dim()) if d != axis]
            sums[name][0] = sums[name][0] + out.sum(dim=dims)
            sums[name][1] += out.numel() // out.shape[axis]

        return hook

    hooks = [layer.register_forward_hook(hook_for(name)) for name, layer in layers.items()]
    try:
        run_batches(adapter, batches)
    finally:
        for h in hooks:
            h.remove()
    means = {}
    for name, (total, count) in sums.items():
        if not count:
            raise RuntimeError(f"bias_correction: layer {name} did not run on the calibration batches")
        mean = total / count
        if not torch.isfinite(mean).all():
            raise FloatingPointError(f"bias_correction: layer {name} has non-finite outputs (NaN or inf)")
        means[name] = mean
    return means


def add_to_bias(layer: nn.Module, offset: torch.Tensor) -> None:
    """Add a per-output-channel offset to the layer's bias, registering a zero bias first if it has none; the FP
    bias stays the model's FP reference (`esc.quant.reference`)."""
    keep_fp(layer, "bias")
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros(offset.numel(), dtype=layer.weight.dtype, device=layer.weight.device))
    with torch.no_grad():
        layer.bias.add_(offset.to(layer.bias.dtype))
