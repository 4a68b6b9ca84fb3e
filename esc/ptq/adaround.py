"""AdaRound (Nagel et al., 2020): learn, per weight, whether to round down or up, so that each layer's output
on calibration inputs is reconstructed best, instead of rounding to nearest.

Each weight becomes floor(w / s) + h(V) on the quantizer's calibrated grid, with h the rectified sigmoid
clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1); V starts where h equals the fractional part (nearest rounding's
neighbourhood) and is trained with Adam on the output reconstruction error plus a regulariser that pushes h to
0 or 1, its exponent beta annealed from 20 to 2 after a warm-up without it. The result is rounded hard (h >= 0.5)
and is exactly on the grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from esc.models.base import ModelAdapter
from esc.ptq.base import PTQStage
from esc.ptq.layers import WeightProblem, fake_quantize, layerwise, output_error, weight_targets
from esc.quant.uniform_grid import integer_range

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch, from the paper


class _RowSample:
    """Up to `per_batch` randomly chosen input rows of each calibration batch.

    `layer` is what `layerwise` hands every collector; which rows to keep does not depend on it."""

    def __init__(self, layer: nn.Module, per_batch: int, generator: torch.Generator):
        self.per_batch, self.generator, self.rows = per_batch, generator, []

    def add(self, rows: torch.Tensor) -> None:
        pick = torch.randperm(len(rows), generator=self.generator)[: self.per_batch].to(rows.device)
        self.rows.append(rows[pick])


class AdaRound(PTQStage):
    """AdaRound on every quantized Linear/Conv weight, layer by layer.

    `iterations`: Adam steps per layer; `lr`: its learning rate; `reg_weight`: the regulariser's weight;
    `warmup`: fraction of the steps without the regulariser; `beta`: (start, end) of its annealed exponent;
    `max_rows`: input rows sampled per layer; `budget_mb`: as for GPTQ (layers collected per pass).
    """

    name = "adaround"

    def __init__(self, iterations: int = 300, lr: float = 1e-2, reg_weight: float = 0.01, warmup: float = 0.2,
                 beta: Sequence[float] = (20.0, 2.0), max_rows: int = 2048, budget_mb: float = 1024, seed: int = 0):
        if iterations < 1 or not 0 <= warmup < 1:
            raise ValueError(f"adaround: need iterations >= 1 and 0 <= warmup < 1, got {iterations}, {warmup}")
        self.iterations, self.lr, self.reg_weight, self.warmup = iterations, lr, reg_weight, warmup
        self.beta = tuple(float(b) for b in beta)
        self.max_rows, self.budget_mb, self.seed = max_rows, budget_mb, seed

    def after_weight_calibration(self, adapter: ModelAdapter, batches: Sequence[dict]) -> dict:
        """Learn the rounding of every target layer's weight and write it."""
        targets, skipped = weight_targets(adapter.model)
        sample = partial(_RowSample, per_batch=max(1, self.max_rows // len(batches)),
                         generator=torch.Generator().manual_seed(self.seed))
        layers = layerwise(adapter, batches, targets, sample, self._solve, self.budget_mb)
        return {"layers": layers, "skipped": skipped}

    def _solve(self, problem: WeightProblem, sample: _RowSample) -> tuple[torch.Tensor, dict]:
        weight, scale, zero_point, quantizer = problem.weight, problem.scale, problem.zero_point, problem.quantizer
        x = torch.cat(sample.rows)
        qmin, qmax = integer_range(quantizer.bits, quantizer.spec.symmetric)
        floor = torch.floor(weight / scale)
        rest = (weight / scale - floor).clamp(1e-4, 1 - 1e-4)
        v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)).requires_grad_(True)  # h(v) == rest

        def dequantize(h):
            return (torch.clamp(floor + h + zero_point, qmin, qmax) - zero_point) * scale

        target = x @ weight.T
        optimizer = torch.optim.Adam([v], lr=self.lr)
        warm = int(self.warmup * self.iterations)
        for step in range(self.iterations):
            h = torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)
            loss = (x @ dequantize(h).T - target).pow(2).sum(dim=1).mean()
            if step >= warm:  # anneal beta from its start to its end over the steps after the warm-up
                progress = (step - warm) / max(1, self.iterations - warm - 1)
                beta = self.beta[1] + 0.5 * (self.beta[0] - self.beta[1]) * (1 + math.cos(math.pi * progress))
                loss = loss + self.reg_weight * (1 - (2 * h - 1).abs().pow(beta)).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        with torch.no_grad():
            second = x.T @ x / len(x)
            learned = fake_quantize(dequantize((v >= 0).float()), scale, zero_point, quantizer)
            rtn = fake_quantize(weight, scale, zero_point, quantizer)
            error, error_rtn = output_error(learned - weight, second), output_error(rtn - weight, second)
        # with few iterations the learned rounding can lose to nearest; never make a layer worse
        return (learned if error <= error_rtn else rtn,
                {"error": min(error, error_rtn), "error_rtn": error_rtn, "learned": error <= error_rtn})
