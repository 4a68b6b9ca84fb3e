"""Weight calibration: per-channel (or per-tensor) ranges computed from the weights themselves."""

from __future__ import annotations

import torch
from torch import nn

from esc.quant.model import quantizers
from esc.quant.quantizer import Quantizer, integer_range, range_to_qparams

WEIGHT_METHODS = ("minmax", "mse")
MSE_SHRINK_FACTORS = torch.linspace(1.0, 0.3, 36)


def _per_channel_minmax(weight: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not per_channel:
        return torch.aminmax(weight)
    return torch.aminmax(weight.reshape(weight.shape[0], -1), dim=1)


@torch.no_grad()
def _mse_range(weight: torch.Tensor, quantizer: Quantizer, lo: torch.Tensor, hi: torch.Tensor):
    # Shrink the min/max range by a common factor and keep, per channel, the factor with the lowest error.
    qmin, qmax = integer_range(quantizer.bits, quantizer.spec.symmetric)
    rows = weight.reshape(lo.numel(), -1)
    best_err = torch.full((lo.numel(),), float("inf"))
    best = torch.ones(lo.numel())
    for factor in MSE_SHRINK_FACTORS:
        scale, zero_point = range_to_qparams(lo.reshape(-1) * factor, hi.reshape(-1) * factor, quantizer.bits,
                                             quantizer.spec.symmetric)
        fq = torch.fake_quantize_per_channel_affine(rows, scale, zero_point, 0, qmin, qmax)
        err = (fq - rows).pow(2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, factor, best)
    return lo * best.reshape(lo.shape), hi * best.reshape(hi.shape)


def calibrate_weights(model: nn.Module, method: str = "minmax") -> int:
    """Set the range of every enabled weight quantizer from its layer's weight; return how many were set.

    `method` is "minmax" (the full range) or "mse" (per channel, the shrunken range with the lowest squared
    rounding error).
    """
    if method not in WEIGHT_METHODS:
        raise ValueError(f"unknown weight calibration method {method!r}; valid: {WEIGHT_METHODS}")
    owners = {id(m.weight_quantizer): m for m in model.modules() if isinstance(getattr(m, "weight_quantizer", None), Quantizer)}
    count = 0
    for q in quantizers(model, "weight"):
        if not q.enabled:
            continue
        weight = owners[id(q)].weight.detach().float()
        lo, hi = _per_channel_minmax(weight, q.spec.granularity == "channel")
        if method == "mse":
            lo, hi = _mse_range(weight, q, lo, hi)
        q.set_range(lo, hi)
        count += 1
    return count
