"""The pairs of Linear layers inside each attention module that an exact offline fold (`esc.ptq.folds`) can join.

The value path: the output projection reads the heads' outputs, and each head's output is a probability-weighted
sum of that head's value vectors, a linear mix over tokens that never crosses heads. Any map that keeps every
head's channels within the head (a per-channel factor, one orthogonal block per head) can therefore be folded
into the value projection and undone in the output projection, with no online cost.

The query and key projections: the scores are q k^T per head, so one orthogonal block per head applied to both,
(q Q)(k Q)^T = q k^T, leaves them unchanged while the query and key quantizers see spread channels (QuaRot rotates
them online because of RoPE; these models have none, so the fold is offline).

Pairs are found from the model's attention modules (those `esc.quant.attention` quantizes) by tracing which
Linear layers run inside them, and each is kept only if a random fold of that kind leaves the attention module's
own output unchanged (checked there, not at the task output, which a small error can hardly move; so a weight
that the check cannot see change elsewhere, tied to another module or computed by a parametrization, is refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from esc.models.base import ModelAdapter
from esc.ptq.base import tied_parameters
from esc.ptq.folds import fold_is_exact, head_rotation, module_output, rotate_channels, scale_channels
from esc.quant.attention import is_attention_module


class AttentionTrace:
    """What the pair finders need of one model on one batch, traced once and shared: the attention modules, the
    Linear layers, which of them each attention runs (in the order of their first call), and each attention's
    output before any fold (computed when first asked for: a partial forward per module)."""

    def __init__(self, adapter: ModelAdapter, batch: dict):
        self.adapter, self.batch = adapter, batch
        model = adapter.model
        self.attentions = {name: m for name, m in model.named_modules() if is_attention_module(m)}
        self.linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        self.calls = _linear_calls(adapter, batch, self.attentions, self.linears)
        self._tied, self._references = tied_parameters(model), {}

    def foldable(self, layer: nn.Linear) -> bool:
        """Whether a fold may rewrite the layer's weight: a plain parameter, not tied to another module."""
        return isinstance(layer.weight, nn.Parameter) and layer.weight.data_ptr() not in self._tied

    def fold_is_exact(self, name: str, params, fold) -> bool:
        """Whether `fold()` keeps attention `name`'s output equal to its traced one (`esc.ptq.folds.fold_is_exact`)."""
        output = partial(module_output, self.adapter, self.batch, self.attentions[name])
        if name not in self._references:
            self._references[name] = output()
        return fold_is_exact(output, self._references[name], params, fold)


@dataclass(frozen=True)
class ValueOutput:
    """An attention module's value projection and the output projection reading its heads' outputs."""

    value: str
    value_layer: nn.Linear
    output: str
    output_layer: nn.Linear
    head_dim: int


@torch.no_grad()
def value_output_pairs(trace: AttentionTrace) -> tuple[dict[str, ValueOutput], dict[str, str]]:
    """The value -> output projection pair of every attention module, by the module's name, and the modules
    skipped with the reason.

    The output projection is the last Linear that runs inside the attention module; the value projection is
    the one among the earlier ones (tried from the latest) for which a random per-channel factor and a random
    per-head rotation folded into the pair leave the output unchanged (a query or key projection would not).
    """
    pairs, skipped = {}, {}
    for name, attention in trace.attentions.items():
        called = trace.calls.get(name, [])
        if not called:
            skipped[name] = "no Linear layer runs inside it"
            continue
        output, head_dim = trace.linears[called[-1]], getattr(attention, "head_dim", None)
        if not trace.foldable(output):
            skipped[name] = "the output projection's weight is tied or parametrized"
            continue
        if not isinstance(head_dim, int) or output.in_features % head_dim:
            skipped[name] = "no head_dim that divides the output projection's input channels"
            continue
        for value in reversed(called[:-1]):
            layer = trace.linears[value]
            if layer.out_features == output.in_features and trace.foldable(layer) and trace.fold_is_exact(
                    name, [layer.weight, layer.bias, output.weight], partial(_random_fold, layer, output, head_dim)):
                pairs[name] = ValueOutput(value, layer, called[-1], output, head_dim)
                break
        else:
            skipped[name] = "no value projection whose fold into the output projection is exact"
    return pairs, skipped


@dataclass(frozen=True)
class QueryKey:
    """An attention module's query and key projections (the first called first)."""

    query: str
    query_layer: nn.Linear
    key: str
    key_layer: nn.Linear
    head_dim: int


@torch.no_grad()
def query_key_pairs(trace: AttentionTrace) -> tuple[dict[str, QueryKey], dict[str, str]]:
    """The query and key projections of every attention module, by the module's name, and the modules skipped
    with the reason: the first two Linear layers run inside it (output projection excluded) for which one random
    per-head rotation of both leaves the module's output unchanged (a value projection's would not)."""
    pairs, skipped = {}, {}
    for name, attention in trace.attentions.items():
        head_dim, inner = getattr(attention, "head_dim", None), trace.calls.get(name, [])[:-1]
        candidates = [QueryKey(a, trace.linears[a], b, trace.linears[b], head_dim)
                      for i, a in enumerate(inner) for b in inner[i + 1:]
                      if trace.linears[a].out_features == trace.linears[b].out_features
                      and isinstance(head_dim, int) and trace.linears[a].out_features % head_dim == 0
                      and trace.foldable(trace.linears[a]) and trace.foldable(trace.linears[b])]
        for pair in candidates:
            params = [pair.query_layer.weight, pair.query_layer.bias, pair.key_layer.weight, pair.key_layer.bias]
            if trace.fold_is_exact(name, params, partial(rotate_query_key, pair, torch.Generator().manual_seed(0))):
                pairs[name] = pair
                break
        else:
            skipped[name] = "no pair of projections whose joint per-head rotation is exact"
    return pairs, skipped


def rotate_query_key(pair: QueryKey, generator: torch.Generator) -> None:
    """Rotate the pair's query and key channels by one random orthogonal block per head (offline, exact)."""
    rotation = head_rotation(pair.query_layer.out_features, pair.head_dim, generator)
    rotate_channels(pair.query_layer, [], rotation)
    rotate_channels(pair.key_layer, [], rotation)


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
