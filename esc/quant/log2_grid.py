"""A power-of-two (log2) grid for non-negative activations such as softmax probabilities.

A b-bit log2 quantizer with scale s represents s * 2^-k for k = 0 .. 2^b - 2, and zero (the last code).
Attention probabilities over many keys are mostly tiny (1500 encoder frames in Whisper: about 1/1500 each), so a
4-bit uniform grid, whose first step is s/15, rounds nearly all of them to zero; the log2 grid keeps every
probability down to s * 2^-14 within a factor of sqrt(2). Rounding happens on the exponent (round(-log2(x/s))),
as in log2 softmax quantizers of the vision-transformer PTQ literature; on integer hardware the PV product
becomes shifts.
"""

from __future__ import annotations

import torch


def fake_quantize_log2(x: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """`x` on the b-bit log2 grid of `scale` (broadcasting against `x`); values at or below zero become zero.

    With gradients enabled the gradient passes straight through (identity), as for the uniform grid.
    """
    deepest = 2**bits - 2  # the largest exponent; the remaining code is zero
    with torch.no_grad():
        exponent = torch.div(x, scale).log2_().neg_().round_().clamp_(min=0)
        off_grid = ~(exponent <= deepest)  # below s * 2^-(deepest + 0.5), zero, negative (NaN exponent)
        y = exponent.neg_().exp2_().mul_(scale).masked_fill_(off_grid, 0.0)
    if torch.is_grad_enabled() and x.requires_grad:
        return x + (y - x).detach()
    return y
