"""The FP reference of a quantized model, held inside it: quantizers off, and rewritten parameters swapped back.

Fidelity (`fidelity_kl`), ESC's label-free fitness, bias correction and the local step all compare the quantized
model with the FP model computed from the very same module with every quantizer switched off. That is only the FP
model while no parameter has been rewritten: GPTQ and AdaRound store their rounded weights in the layer, and bias
correction changes biases, so with quantizers off alone the "reference" would already carry the weight rounding
(and fidelity would silently leave out the weight error, and ESC would fit activations to the wrong target).
Stages that rewrite a parameter call `keep_fp` first; `fp_reference` swaps the kept originals in for its block.
SmoothQuant and rotation need nothing here: they change parameters so that FP outputs stay the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from esc.quant.model import quantizers_off

ORIGINALS = "_esc_fp_originals"  # module attribute: parameter name -> its FP value (None: it did not exist)


def keep_fp(layer: nn.Module, name: str) -> None:
    """Remember `layer.<name>`'s FP value before a stage rewrites it (only the first time: later stages rewrite an
    already rewritten value, whose original is the FP one kept here)."""
    originals = layer.__dict__.setdefault(ORIGINALS, {})
    if name not in originals:
        value = getattr(layer, name)
        originals[name] = None if value is None else value.detach().clone()


@contextmanager
def fp_reference(model: nn.Module) -> Iterator[None]:
    """Within the block, `model` computes exactly the FP model: quantizers off and kept originals in place."""
    swapped = []
    try:
        for module in model.modules():
            for name, original in module.__dict__.get(ORIGINALS, {}).items():
                param = getattr(module, name)
                current = param.data
                # a parameter a stage created (a bias the layer had none of) is zero in the FP model
                param.data = torch.zeros_like(current) if original is None else original
                swapped.append((param, current))
        with quantizers_off(model):
            yield
    finally:
        for param, current in swapped:
            param.data = current
