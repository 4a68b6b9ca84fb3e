"""Layer-wise weight reconstruction, shared by GPTQ and AdaRound.

Both see a layer as a matrix W of shape (out, columns) (a convolution's weight flattened over in_channels and
kernel) applied to input rows X of shape (n, columns) (a convolution's input unfolded into patches), so one
solver serves Linear, Conv1d and Conv2d. A grouped convolution is `groups` such problems (each group's output
channels see only its own input channels), solved one by one. Layers are processed in passes over the calibration
batches: a pass collects the inputs of the next few layers (as many as fit in `budget_mb`, counting columns^2
floats per layer, the size of GPTQ's Hessian; at least one layer), solves them, writes their weights, and frees the
statistics; later passes see the rewritten weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from esc.models.base import ModelAdapter
from esc.ptq.base import run_batches, tied_parameters
from esc.quant.model import quantizers_off
from esc.quant.model import QuantizedLayer
from esc.quant.quantizer import Quantizer
from esc.quant.uniform_grid import integer_range
from esc.quant.reference import keep_fp


def weight_targets(model: nn.Module) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Layers whose weights a stage can rewrite, by name, and the skipped ones with the reason.

    A target has an enabled, calibrated weight quantizer and a weight that can be written: a plain Parameter, or
    a parametrized weight whose parametrizations can be inverted (wav2vec2's weight-normed positional
    convolution: writing W sets g = |W| and v = W). A weight tied to another module (Whisper's output projection)
    would change that module too, and a padding mode other than zeros does not unfold into patches; these keep
    round-to-nearest.
    """
    targets, skipped, tied = {}, {}, tied_parameters(model)
    for name, layer in model.named_modules():
        if not isinstance(layer, QuantizedLayer):
            continue
        q: Quantizer = layer.weight_quantizer
        if not q.enabled:
            continue
        if not q.is_calibrated:
            raise RuntimeError(f"{q.name} is not calibrated; run calibrate_weights before this stage")
        reason = _unwritable(layer, tied)
        if reason:
            skipped[name] = reason
        else:
            targets[name] = layer
    return targets, skipped


def _unwritable(layer: nn.Module, tied: set[int]) -> str | None:
    """Why a stage cannot rewrite `layer`'s weight (None: it can)."""
    if parametrize.is_parametrized(layer, "weight"):
        if not all(hasattr(p, "right_inverse") for p in layer.parametrizations.weight):
            return "parametrized weight without an inverse"
    elif layer.weight.data_ptr() in tied:
        return "tied weight"
    if isinstance(getattr(layer, "padding", 0), str) or getattr(layer, "padding_mode", "zeros") != "zeros":
        return "padding mode"
    return None


@dataclass
class WeightProblem:
    """One reconstruction problem: a weight matrix (out, columns), FP, with the scale and zero point of each of
    its elements on the quantizer's grid. A solver returns the rewritten matrix (on that grid) and its report."""

    weight: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    quantizer: Quantizer


Solver = Callable[[WeightProblem, object], tuple[torch.Tensor, dict]]


def input_rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows (n, columns) such that output rows = rows @ W.reshape(out, -1).T (+ bias)."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1]).float()
    if isinstance(layer, nn.Conv1d):  # as a Conv2d of height 1
        x = x.unsqueeze(2)
        kernel, dilation = (1, *layer.kernel_size), (1, *layer.dilation)
        padding, stride = (0, *layer.padding), (1, *layer.stride)
    else:
        kernel, dilation, padding, stride = layer.kernel_size, layer.dilation, layer.padding, layer.stride
    patches = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, C*k, L)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1]).float()


def column_grid(quantizer: Quantizer, out: int, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of every weight element, each (out, columns), from the quantizer's calibration."""
    scale, zero_point = quantizer.scale, quantizer.zero_point
    if scale.dim() == 0:
        return scale.expand(out, columns), zero_point.expand(out, columns)
    if scale.dim() == 1:
        return scale[:, None].expand(out, columns), zero_point[:, None].expand(out, columns)
    size = quantizer.spec.group_size  # (out, n_groups): group g covers columns g*size .. (g+1)*size-1
    return (scale.repeat_interleave(size, dim=1)[:, :columns],
            zero_point.repeat_interleave(size, dim=1)[:, :columns])


def fake_quantize(w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, quantizer: Quantizer):
    """Round `w` to nearest on the elementwise grid, with the quantizer's own kernel (so results match it)."""
    qmin, qmax = integer_range(quantizer.bits, quantizer.spec.symmetric)
    flat = torch.fake_quantize_per_channel_affine(w.reshape(-1, 1), scale.reshape(-1).contiguous(),
                                                  zero_point.reshape(-1).contiguous(), 0, qmin, qmax)
    return flat.reshape(w.shape)


def output_error(delta: torch.Tensor, second_moment: torch.Tensor) -> float:
    """Mean squared output error per element, E ||delta @ x||^2 / out, from E[x x^T] (columns x columns)."""
    return float(((delta @ second_moment) * delta).sum() / delta.shape[0])


def write_weight(layer: nn.Module, matrix: torch.Tensor) -> None:
    """Write the rewritten (out, columns) matrix into the layer's weight in place; the FP weight stays the model's
    FP reference (`esc.quant.reference`). A parametrized weight is written through its parametrizations'
    `right_inverse`, which sets the stored originals (kept as the FP reference instead)."""
    value = matrix.reshape(layer.weight.shape).to(layer.weight.dtype)
    with torch.no_grad():
        if parametrize.is_parametrized(layer, "weight"):
            originals = layer.parametrizations.weight
            for name, _ in originals.named_parameters(recurse=False):
                keep_fp(originals, name)
            layer.weight = value
        else:
            keep_fp(layer, "weight")
            layer.weight.copy_(value)


def solve_layer(layer: nn.Module, collected: Sequence[object], solve: Solver) -> dict:
    """Solve each group of `layer` (one, unless a grouped convolution) with the inputs `collected` for it, write
    the rewritten weight, and return the report: each entry averaged over the groups (their output channel
    counts are equal), a yes/no entry as the share of groups where it holds."""
    quantizer = layer.weight_quantizer
    weight = layer.weight.detach().reshape(layer.weight.shape[0], -1).float().clone()
    scale, zero_point = column_grid(quantizer, *weight.shape)
    rows = weight.shape[0] // len(collected)
    rewritten, reports = torch.empty_like(weight), []
    for g, inputs in enumerate(collected):
        part = slice(g * rows, (g + 1) * rows)
        rewritten[part], report = solve(WeightProblem(weight[part], scale[part], zero_point[part], quantizer), inputs)
        reports.append(report)
    write_weight(layer, rewritten)
    if len(reports) == 1:
        return reports[0]
    return {key: sum(float(r[key]) for r in reports) / len(reports) for key in reports[0]}


def layerwise(adapter: ModelAdapter, batches: Sequence[dict], targets: dict[str, nn.Module],
              collector: Callable[[nn.Module], object], solve: Solver, budget_mb: float) -> dict[str, dict]:
    """Collect each target's input rows with `collector(layer)` (one per group, each over `layer.weight[0]`'s
    columns, which for a grouped convolution are one group's; its `add(rows)` receives them),
    in passes bounded by `budget_mb`; then solve each target (`solve_layer`) and return the reports by layer name
    (each with the seconds its solve took). Activation quantizers are off: they are not calibrated yet."""
    reports: dict[str, dict] = {}
    names = list(targets)
    with quantizers_off(adapter.model, "activation"):
        while names:
            pending, used = {}, 0.0
            while names and (not pending or used + _size_mb(targets[names[0]]) <= budget_mb):
                used += _size_mb(targets[names[0]])
                name = names.pop(0)
                layer = targets[name]
                pending[name] = [collector(layer) for _ in range(getattr(layer, "groups", 1))]
            hooks = [targets[n].register_forward_hook(_hook(c)) for n, c in pending.items()]
            try:
                run_batches(adapter, batches)
            finally:
                for h in hooks:
                    h.remove()
            for name, collected in pending.items():
                start = time.perf_counter()
                reports[name] = solve_layer(targets[name], collected, solve)
                reports[name]["seconds"] = time.perf_counter() - start
    return reports


def _size_mb(layer: nn.Module) -> float:
    columns = layer.weight[0].numel()
    return getattr(layer, "groups", 1) * columns * columns * 4 / 2**20


def _hook(collected: Sequence[object]):
    def hook(layer, args, output):
        rows = input_rows(layer, args[0].detach())
        columns = rows.shape[1] // len(collected)  # a group's input channels are contiguous in the patches
        for g, inputs in enumerate(collected):
            inputs.add(rows[:, g * columns:(g + 1) * columns])

    return hook
