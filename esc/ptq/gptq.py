"""GPTQ (Frantar et al., 2023): quantize a layer's weight column by column, spreading each column's rounding
error over the columns not yet quantized, weighted by the inverse Hessian H = 2 E[x x^T] of its inputs.

The grid is the weight quantizer's calibrated one (per-tensor, per-channel or per-group scales, as GPTQ's
`static_groups`), so the result is exactly on it: fake-quantizing the rewritten weight leaves it unchanged,
and activation ordering needs no group re-indexing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from esc.models.base import ModelAdapter
from esc.ptq.base import PTQStage
from esc.ptq.layers import WeightProblem, fake_quantize, layerwise, output_error, weight_targets


class _SecondMoment:
    """Running sum of x x^T over a layer's input rows, one group's for a grouped convolution (the Hessian up to a
    factor 2/n)."""

    def __init__(self, layer: nn.Module):
        columns = layer.weight[0].numel()
        self.sum = torch.zeros(columns, columns, device=layer.weight.device)
        self.rows = 0

    def add(self, rows: torch.Tensor) -> None:
        self.sum.addmm_(rows.T, rows)
        self.rows += rows.shape[0]

    def mean(self) -> torch.Tensor:
        return self.sum / max(self.rows, 1)


class GPTQ(PTQStage):
    """GPTQ on every quantized Linear/Conv weight; the report gives each layer's output error against
    round-to-nearest's on the same inputs.

    `percdamp`: damping added to H's diagonal, as a fraction of its mean; `block_size`: columns updated
    together (lazy batch updates); `act_order`: quantize columns in decreasing order of H's diagonal;
    `budget_mb`: memory for the Hessians collected in one pass over the calibration batches.
    """

    name = "gptq"

    def __init__(self, percdamp: float = 0.01, block_size: int = 128, act_order: bool = True,
                 budget_mb: float = 1024):
        if not 0 <= percdamp < 1:
            raise ValueError(f"gptq: percdamp must be in [0, 1), got {percdamp}")
        if block_size < 1:
            raise ValueError(f"gptq: block_size must be positive, got {block_size}")
        self.percdamp, self.block_size, self.act_order, self.budget_mb = percdamp, block_size, act_order, budget_mb

    def after_weight_calibration(self, adapter: ModelAdapter, batches: Sequence[dict]) -> dict:
        """Rewrite every target layer's weight with GPTQ, layer by layer."""
        targets, skipped = weight_targets(adapter.model)
        layers = layerwise(adapter, batches, targets, _SecondMoment, self._solve, self.budget_mb)
        return {"layers": layers, "skipped": skipped}

    @torch.no_grad()
    def _solve(self, problem: WeightProblem, moment: _SecondMoment) -> tuple[torch.Tensor, dict]:
        original, scale, zero_point, quantizer = problem.weight, problem.scale, problem.zero_point, problem.quantizer
        second = moment.mean()
        rtn = fake_quantize(original, scale, zero_point, quantizer)

        weight, hessian = original.clone(), second.clone()
        dead = torch.diag(hessian) == 0  # inputs that were always zero: any value works, zero is on the grid
        hessian[dead, dead] = 1
        weight[:, dead] = 0
        order = torch.argsort(torch.diag(hessian), descending=True) if self.act_order else torch.arange(len(hessian))
        weight, hessian = weight[:, order], hessian[order][:, order]
        scale, zero_point = scale[:, order], zero_point[:, order]
        quantized = self._columns(weight, _upper_inverse_cholesky(hessian, self.percdamp), scale, zero_point,
                                  quantizer)[:, torch.argsort(order)]
        return quantized, {"error": output_error(quantized - original, second),
                           "error_rtn": output_error(rtn - original, second)}

    def _columns(self, weight, hinv, scale, zero_point, quantizer) -> torch.Tensor:
        # The reference algorithm: within a block, quantize one column and push its error onto the block's
        # remaining columns; after a block, push the block's errors onto every later column at once.
        quantized = torch.zeros_like(weight)
        columns = weight.shape[1]
        for start in range(0, columns, self.block_size):
            end = min(start + self.block_size, columns)
            block, hblock = weight[:, start:end].clone(), hinv[start:end, start:end]
            errors = torch.zeros_like(block)
            for i in range(end - start):
                j = start + i
                q = fake_quantize(block[:, i:i + 1], scale[:, j:j + 1], zero_point[:, j:j + 1], quantizer)[:, 0]
                quantized[:, j] = q
                err = (block[:, i] - q) / hblock[i, i]
                block[:, i:] -= err[:, None] * hblock[i, i:][None, :]
                errors[:, i] = err
            weight[:, end:] -= errors @ hinv[start:end, end:]
        return quantized


def _upper_inverse_cholesky(hessian: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of the damped H^-1 (float64 for stability), raising the damping if H is singular."""
    h = hessian.double()
    eye = torch.eye(len(h), dtype=h.dtype, device=h.device)
    damp = percdamp * torch.diag(h).mean()
    for _ in range(6):
        factor, info = torch.linalg.cholesky_ex(h + damp * eye)
        if info == 0:
            return torch.linalg.cholesky(torch.cholesky_inverse(factor), upper=True).to(hessian.dtype)
        damp = max(damp * 10, 1e-8 * torch.diag(h).mean())
    raise RuntimeError("gptq: the Hessian stays singular after raising the damping 10^6-fold")
