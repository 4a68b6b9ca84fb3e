"""Layer-wise weight reconstruction, shared by GPTQ and AdaRound.

Both see a layer as a matrix W of shape (out, columns) (a convolution's weight flattened over in_channels and
kernel) applied to input rows X of shape (n, columns) (a convolution's input unfolded into patches), so one
solver serves Linear, Conv1d and Conv2d. Layers are processed in passes over the calibration batches: a pass
collects the inputs of the next few layers (as many as fit in `budget_mb`, counting columns^2 floats per layer,
the size of GPTQ's Hessian; at least one layer), solves them, writes their weights, and frees the statistics;
later passes see the rewritten weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from esc.models.base import ModelAdapter
from esc.ptq.base import run_batches, tied_parameters
from esc.quant.model import quantizers_off
from esc.quant.model import QuantizedLayer
from esc.quant.quantizer import Quantizer, integer_range
from esc.quant.reference import keep_fp


def weight_targets(model: nn.Module) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Layers whose weights a stage can rewrite, by name, and the skipped ones with the reason.

    A target has an enabled, calibrated weight quantizer and a plain Parameter weight: a parametrized weight
    (wav2vec2's weight-normed positional convolution) is computed, not stored, a weight tied to another
    module (Whisper's output projection) would change that module too, and a grouped convolution has one input
    matrix per group; these keep round-to-nearest.
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
        if not isinstance(layer.weight, nn.Parameter):
            skipped[name] = "parametrized weight"
        elif layer.weight.data_ptr() in tied:
            skipped[name] = "tied weight"
        elif getattr(layer, "groups", 1) != 1:
            skipped[name] = "grouped convolution"
        elif isinstance(getattr(layer, "padding", 0), str) or getattr(layer, "padding_mode", "zeros") != "zeros":
            skipped[name] = "padding mode"
        else:
            targets[name] = layer
    return targets, skipped


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
    """Write the rewritten (out, columns) matrix into the layer's weight in place (bumps its version); the FP
    weight stays the model's FP reference (`esc.quant.reference`)."""
    keep_fp(layer, "weight")
    with torch.no_grad():
        layer.weight.copy_(matrix.reshape(layer.weight.shape).to(layer.weight.dtype))


def layerwise(adapter: ModelAdapter, batches: Sequence[dict], targets: dict[str, nn.Module],
              collector: Callable[[nn.Module], object], solve: Callable[[str, nn.Module, object], dict],
              budget_mb: float) -> dict[str, dict]:
    """Collect each target's inputs with `collector(layer)` (its `add(rows)` receives input rows), in passes
    bounded by `budget_mb`; then `solve(name, layer, collected)` each one and return the reports by layer name
    (each with the seconds its solve took). Activation quantizers are off: they are not calibrated yet."""
    reports: dict[str, dict] = {}
    names = list(targets)
    with quantizers_off(adapter.model, "activation"):
        while names:
            pending, used = {}, 0.0
            while names and (not pending or used + _size_mb(targets[names[0]]) <= budget_mb):
                used += _size_mb(targets[names[0]])
                name = names.pop(0)
                pending[name] = collector(targets[name])
            hooks = [targets[n].register_forward_hook(_hook(c)) for n, c in pending.items()]
            try:
                run_batches(adapter, batches)
            finally:
                for h in hooks:
                    h.remove()
            for name, collected in pending.items():
                start = time.perf_counter()
                reports[name] = solve(name, targets[name], collected)
                reports[name]["seconds"] = time.perf_counter() - start
    return reports


def _size_mb(layer: nn.Module) -> float:
    columns = layer.weight[0].numel()
    return columns * columns * 4 / 2**20


def _hook(collected):
    def hook(layer, args, output):
        collected.add(input_rows(layer, args[0].detach()))

    return hook
