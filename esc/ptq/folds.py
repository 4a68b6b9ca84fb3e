"""Exact offline folds shared by SmoothQuant and rotation: an invertible map on the channels a layer produces,
folded into that layer's output rows (and bias) and undone in the weight columns of the Linear layers reading
them, so the model computes the same function while the tensor in between (what its quantizers see) changes.

The attention value path is such a pair: the output projection reads the heads' outputs, and each head's output
is a probability-weighted sum of that head's value vectors, a linear mix over tokens that never crosses heads.
Any map that keeps every head's channels within the head (a per-channel factor, one orthogonal block per head)
can therefore be folded into the value projection and undone in the output projection, with no online cost.
Pairs are found from the model's attention modules (those `esc.quant.attention` quantizes) by tracing which
Linear layers run inside them, and each is kept only if a random fold of that kind leaves the attention module's
own output unchanged (checked there, not at the task output, which a small error can hardly move; so a weight
that the check cannot see change elsewhere, tied to another module or computed by a parametrization, is refused).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from esc.models.base import ModelAdapter
from esc.ptq.base import tied_parameters
from esc.quant.attention import is_attention_module


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


@dataclass(frozen=True)
class ValueOutput:
    """An attention module's value projection and the output projection reading its heads' outputs."""

    value: str
    value_layer: nn.Linear
    output: str
    output_layer: nn.Linear
    head_dim: int


@torch.no_grad()
def value_output_pairs(adapter: ModelAdapter, batch: dict) -> tuple[dict[str, ValueOutput], dict[str, str]]:
    """The value -> output projection pair of every attention module, by the module's name, and the modules
    skipped with the reason.

    The output projection is the last Linear that runs inside the attention module; the value projection is
    the one among the earlier ones (tried from the latest) for which a random per-channel factor and a random
    per-head rotation folded into the pair leave the output unchanged (a query or key projection would not).
    """
    model = adapter.model
    attentions = {name: m for name, m in model.named_modules() if is_attention_module(m)}
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    calls, tied = _linear_calls(adapter, batch, attentions, linears), tied_parameters(model)

    def foldable(layer: nn.Linear) -> bool:
        return isinstance(layer.weight, nn.Parameter) and layer.weight.data_ptr() not in tied

    pairs, skipped = {}, {}
    for name, attention in attentions.items():
        called = calls.get(name, [])
        if not called:
            skipped[name] = "no Linear layer runs inside it"
            continue
        output, head_dim = linears[called[-1]], getattr(attention, "head_dim", None)
        if not foldable(output):
            skipped[name] = "the output projection's weight is tied or parametrized"
            continue
        if not isinstance(head_dim, int) or output.in_features % head_dim:
            skipped[name] = "no head_dim that divides the output projection's input channels"
            continue
        attention_output = partial(module_output, adapter, batch, attention)
        reference = attention_output()
        for value in reversed(called[:-1]):
            layer = linears[value]
            if layer.out_features == output.in_features and foldable(layer) and fold_is_exact(
                    attention_output, reference, [layer.weight, layer.bias, output.weight],
                    partial(_random_fold, layer, output, head_dim)):
                pairs[name] = ValueOutput(value, layer, called[-1], output, head_dim)
                break
        else:
            skipped[name] = "no value projection whose fold into the output projection is exact"
    return pairs, skipped


def _linear_calls(adapter: ModelAdapter, batch: dict, attentions: dict[str, nn.Module],
                  linears: dict[str, nn.Linear]) -> dict[str, list[str]]:
    # the Linear layers each attention module runs, in the order of their first call
    stack, calls = [], {}

    def enter(name):
        def hook(module, args):
            stack.append(name)
            calls.setdefault(name, [])
        return hook

    def leave(module, args, output):
        stack.pop()

    def linear(name):
        def hook(module, args):
            if stack and name not in calls[stack[-1]]:
                calls[stack[-1]].append(name)
        return hook

    hooks = [m.register_forward_pre_hook(enter(n)) for n, m in attentions.items()]
    hooks += [m.register_forward_hook(leave) for m in attentions.values()]
    hooks += [m.register_forward_pre_hook(linear(n)) for n, m in linears.items()]
    try:
        adapter.forward(batch)
    finally:
        for h in hooks:
            h.remove()
    return calls


def _random_fold(value: nn.Linear, output: nn.Linear, head_dim: int) -> None:
    generator = torch.Generator().manual_seed(0)
    channels = output.in_features
    scale_channels(value, [output], torch.exp2(torch.rand(channels, generator=generator) * 2 - 1))
    rotate_channels(value, [output], head_rotation(channels, head_dim, generator))
