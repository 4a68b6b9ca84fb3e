"""Weight calibration: per-channel, per-group or per-tensor ranges computed from the weights themselves."""

from __future__ import annotations

import torch
from torch import nn

from esc.quant.model import quantizers
from esc.quant.quantizer import Quantizer
from esc.quant.uniform_grid import integer_range, range_to_qparams, weight_groups

WEIGHT_METHODS = ("minmax", "mse")
MSE_SHRINK_FACTORS = torch.linspace(1.0, 0.3, 36)


def _rows(weight: torch.Tensor, quantizer: Quantizer) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The weight as one row per scale, and the shape of the scale: (), (out,) or (out, n_groups)."""
    granularity = quantizer.spec.granularity
    if granularity == "group":
        groups = weight_groups(weight, quantizer.spec.group_size)
        return groups.reshape(-1, groups.shape[-1]), tuple(groups.shape[:2])
    if granularity == "channel":
        return weight.reshape(weight.shape[0], -1), (weight.shape[0],)
    return weight.reshape(1, -1), ()


@torch.no_grad()
def _mse_range(rows: torch.Tensor, quantizer: Quantizer, lo: torch.Tensor, hi: torch.Tensor):
    # Shrink the min/max range by a common factor and keep, per row, the factor with the lowest error.
    qmin, qmax = integer_range(quantizer.bits, quantizer.spec.symmetric)
    best_err = torch.full((lo.numel(),), float("inf"), device=rows.device)
    best = torch.ones(lo.numel(), device=rows.device)
    for factor in MSE_SHRINK_FACTORS:
        scale, zero_point = range_to_qparams(lo.reshape(-1) * factor, hi.reshape(-1) * factor, quantizer.bits,
                                             quantizer.spec.symmetric)
        fq = torch.fake_quantize_per_channel_affine(rows, scale, zero_point, 0, qmin, qmax)
        err = (fq - rows).pow(2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, factor, best)
    return lo * best.reshape(lo.shape), hi * best.reshape(hi.shape)


def calibrate_weights(model: nn.Module, method: str = "minmax", overwrite: bool = False) -> int:
    """Set the range of every enabled weight quantizer from its layer's weight; return how many were set.

    `method` is "minmax" (the full range) or "mse" (per channel or group, the shrunken range with the lowest
    squared rounding error). Quantizers that already hold a range keep it unless `overwrite`: PTQ stages
    (GPTQ, AdaRound) put the weights on a calibrated grid before the activation calibrator runs, and
    recomputing the range from the rewritten weights would move the grid under them.
    """
    if method not in WEIGHT_METHODS:
        raise ValueError(f"unknown weight calibration method {method!r}; valid: {WEIGHT_METHODS}")
    owners = {id(m.weight_quantizer): m for m in model.modules()
              if isinstance(getattr(m, "weight_quantizer", None), Quantizer)}
    count = 0
    for q in quantizers(model, "weight"):
        if not q.enabled or (q.is_calibrated and not overwrite):
            continue
        rows, shape = _rows(owners[id(q)].weight.detach().float(), q)
        lo, hi = torch.aminmax(rows, dim=1)
        if method == "mse":
            lo, hi = _mse_range(rows, q, lo, hi)
        q.set_range(lo.reshape(shape), hi.reshape(shape))
        count += 1
    return count
