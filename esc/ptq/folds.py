"""Exact offline folds shared by SmoothQuant and rotation: an invertible map on the channels a layer produces,
folded into that layer's output rows (and bias) and undone in the weight columns of the Linear layers reading
them, so the model computes the same function while the tensor in between (what its quantizers see) changes.
Which layers in an attention module form such pairs is found in `esc.ptq.attention_pairs`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from esc.models.base import ModelAdapter


def random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random n x n orthogonal matrix: a randomised Hadamard one when n is a power of two."""
    if n & (n - 1) == 0:
        h = torch.ones(1, 1)
        while len(h) < n:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
        signs = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
        return signs[:, None] * h / n**0.5  # x D H: the signs scramble x before H mixes it
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()  # sign fix: uniformly distributed (Haar)


def head_rotation(channels: int, head_dim: int, generator: torch.Generator) -> torch.Tensor:
    """A block-diagonal orthogonal matrix with an independent `random_orthogonal(head_dim)` block per head."""
    return torch.block_diag(*[random_orthogonal(head_dim, generator) for _ in range(channels // head_dim)])


def scale_channels(source: nn.Module, consumers: Iterable[nn.Linear], factors: torch.Tensor) -> None:
    """Divide the source's output channels by `factors` (a LayerNorm's affine, or a Linear's weight rows; and
    the bias) and multiply the consumers' weight columns by them."""
    factors = factors.to(source.weight.device, source.weight.dtype)
    source.weight.div_(factors.reshape(-1, *[1] * (source.weight.dim() - 1)))
    if source.bias is not None:
        source.bias.div_(factors)
    for layer in consumers:
        layer.weight.mul_(factors)


def rotate_channels(source: nn.Linear, consumers: Iterable[nn.Linear], rotation: torch.Tensor) -> None:
    """Turn the source's output z into z Q (weight rows Q^T W, bias b Q) and the consumers' weights W into W Q."""
    rotation = rotation.to(source.weight.device, source.weight.dtype)
    source.weight.copy_(rotation.T @ source.weight)
    if source.bias is not None:
        source.bias.copy_(source.bias @ rotation)
    for layer in consumers:
        layer.weight.copy_(layer.weight @ rotation)


def fold_is_exact(output: Callable[[], torch.Tensor], reference: torch.Tensor,
                  params: Sequence[torch.Tensor | None], fold: Callable[[], None]) -> bool:
    """Whether `fold()`, which rewrites `params` in place, keeps `output()` equal to `reference` (its value
    before, to float tolerance); the parameters are restored exactly either way."""
    params = [p for p in params if p is not None]
    saved = [p.detach().clone() for p in params]
    fold()
    out = output()
    for p, value in zip(params, saved):
        p.copy_(value)
    return bool((out - reference).abs().max() <= 1e-4 * reference.abs().max() + 1e-6)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the tensor it needed has been computed."""


def module_output(adapter: ModelAdapter, batch: dict, module: nn.Module) -> torch.Tensor:
    """The module's output (the first, if it returns several) in the task forward on `batch`, whose remainder
    is skipped."""
    captured = []

    def hook(m, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        adapter.forward(batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]
