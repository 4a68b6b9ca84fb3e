"""The uniform integer grid: the integer range of a bit width, scales and zero points from a value range, the rows
that share a dynamic scale (tokens, token groups, weight groups), and the fake-quantization arithmetic on them.

Shared by the `Quantizer` module and the calibrators, which compute candidate errors on the same grid.
"""

from __future__ import annotations

import torch
from torch import nn


def integer_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """The integer grid: signed [-2^(b-1), 2^(b-1)-1] when symmetric, unsigned [0, 2^b-1] otherwise."""
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def range_to_qparams(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool):
    """Scale and zero point that cover [lo, hi] (elementwise tensors); a zero range gets a tiny scale."""
    qmin, qmax = integer_range(bits, symmetric)
    lo = torch.minimum(lo, torch.zeros_like(lo))  # zero must stay exactly representable (padding, ReLU)
    hi = torch.maximum(hi, torch.zeros_like(hi))
    if symmetric:
        scale = torch.maximum(-lo, hi) / qmax
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zero_point = torch.clamp(torch.round(qmin - lo / scale.clamp_min(1e-12)), qmin, qmax).to(torch.int32)
    return scale.clamp_min(1e-12).float(), zero_point


def dynamic_rows(x: torch.Tensor, axis: int, group_size: int | None, name: str) -> torch.Tensor:
    """`x` as rows that share one dynamic scale each: (tokens, features) per token, or with `group_size`
    (tokens * groups, group_size) per token group, the last group of a token zero-padded (zero lies in every
    range, so padding changes no scale). `axis` is the feature axis; the batch stays first, so the rows of
    tiled candidates stay candidate-major (`Quantizer.population`). A single feature per token is refused,
    naming the quantizer `name`: every value would get its own scale, i.e. no quantization at all (a one-channel
    waveform or spectrogram entering a model's first convolution)."""
    features = x.shape[axis]
    if features == 1:
        raise ValueError(f"quantizer {name!r}: per-token quantization of an input with one feature per token is "
                         "lossless (each value gets its own scale); quantize it per tensor (a placement rule with "
                         "granularity: tensor)")
    rows = x.movedim(axis, -1).reshape(-1, features)
    if group_size is None:
        return rows
    return nn.functional.pad(rows, (0, -features % group_size)).reshape(-1, group_size)


def from_dynamic_rows(rows: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    """The inverse of `dynamic_rows`: rows back in the shape of `like`, padding dropped."""
    moved = like.movedim(axis, -1)
    features = moved.shape[-1]
    padded = features + -features % rows.shape[1]  # rows are whole tokens, or groups of a zero-padded token
    return rows.reshape(-1, padded)[:, :features].reshape(moved.shape).movedim(-1, axis)


def fake_quantize_tokens(rows: torch.Tensor, ratio, bits: int, symmetric: bool) -> torch.Tensor:
    """Dynamic fake quantization of `rows` (from `dynamic_rows`): each row's grid covers `ratio` of its range.

    `ratio` is a float, a 0-d tensor or one value per row. Scales come from the input without a gradient; the
    straight-through gradient passes inside each row's range.
    """
    if rows.shape[0] == 0:  # no tokens (an empty sequence): nothing to quantize, and no range to take
        return rows
    qmin, qmax = integer_range(bits, symmetric)
    with torch.no_grad():
        lo, hi = torch.aminmax(rows, dim=1)
        scale, zero_point = range_to_qparams(lo * ratio, hi * ratio, bits, symmetric)
    return torch.fake_quantize_per_channel_affine(rows, scale, zero_point, 0, qmin, qmax)


def weight_groups(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """The weight as (out_channels, n_groups, group_size): consecutive weights of each flattened row.

    A row whose length is not a multiple of `group_size` is padded with zeros; zero is always on the grid
    and inside every range, so padding changes neither the ranges nor the rounding error.
    """
    rows = weight.reshape(weight.shape[0], -1)
    rows = nn.functional.pad(rows, (0, -rows.shape[1] % group_size))
    return rows.reshape(rows.shape[0], -1, group_size)


def fake_quantize_inference(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                            qmax: int) -> torch.Tensor:
    """Per-tensor fake quantization without autograd, equal bit for bit to torch's fused kernel.

    The fused kernel also builds the straight-through gradient mask, even under no_grad, and costs about 2.5x
    these in-place passes on CPU; on the real Whisper it was 40% of a quantized forward. `scale` and
    `zero_point` broadcast against `x`: one pair, or (rows, 1) pairs for an input viewed as (rows, -1).
    """
    y = torch.mul(x, torch.reciprocal(scale)).round_()  # the kernel's x * (1/scale), rounded half to even
    if zero_point.any():
        return y.add_(zero_point).clamp_(qmin, qmax).sub_(zero_point).mul_(scale)
    return y.clamp_(qmin, qmax).mul_(scale)
