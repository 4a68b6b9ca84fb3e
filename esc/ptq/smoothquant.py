"""SmoothQuant (Xiao et al., 2023): migrate activation outliers into the weights, exactly, before quantization.

For a LayerNorm whose output feeds only Linear layers (q/k/v projections, the first feed-forward layer; in
Whisper also the encoder's final norm feeding every cross-attention k/v), each channel j is divided by
s_j = max|X_j|^alpha / max|W_:j|^(1-alpha) in the norm's weight and bias and multiplied back into the Linear
weights' column j. The pairs are found by tracing which Linear receives which norm's output tensor, so no
family is named; a fold that would change the model (a norm's output that also feeds a residual, as in
post-LN wav2vec2, or a weight shared with an embedding) is detected by trying a random factor, and skipped.

With `value_output`, the input of each attention's output projection (where real Whisper models have their
largest outliers) is smoothed the same way, with the value projection in the norm's place: its weight rows and
bias are divided by s (exact, see `esc.ptq.attention_pairs`). The attention's value quantizer then sees smoothed values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from esc.models.base import ModelAdapter
from esc.ptq.attention_pairs import AttentionTrace, ValueOutput, value_output_pairs
from esc.ptq.base import PTQStage
from esc.ptq.folds import fold_is_exact, scale_channels
from esc.quant.uniform_grid import integer_range


@dataclass
class _Group:
    """The Linear layers reading one tensor, the module producing its channels (a LayerNorm, or an attention's
    value projection), and the tensor's per-channel max|X| and a sample of its rows."""

    source: nn.Module
    consumers: dict[str, nn.Linear] = field(default_factory=dict)
    amax: torch.Tensor | None = None
    rows: list[torch.Tensor] = field(default_factory=list)

    def record(self, x: torch.Tensor, per_batch: int, generator: torch.Generator) -> None:
        flat = x.detach().reshape(-1, x.shape[-1]).float()
        amax = flat.abs().amax(dim=0)
        self.amax = amax if self.amax is None else torch.maximum(self.amax, amax)
        pick = torch.randperm(len(flat), generator=generator)[:per_batch].to(flat.device)
        self.rows.append(flat[pick])


class SmoothQuant(PTQStage):
    """Fold per-channel smoothing factors into LayerNorm -> Linear pairs and, with `value_output`, into every
    attention's value -> output projection pair.

    `alpha`: the migration strength, a number, or a list of candidates searched per group: each candidate (and
    no smoothing) is scored by the output error of the group's consumers with `w_bits` per-channel weights and
    `a_bits` per-tensor inputs (min-max ranges), on up to `max_rows` sampled input rows, and the best is kept.
    """

    name = "smoothquant"

    def __init__(self, alpha: float | Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8), w_bits: int = 8,
                 a_bits: int = 8, max_rows: int = 2048, value_output: bool = True, seed: int = 0):
        alphas = [alpha] if isinstance(alpha, (int, float)) else list(alpha)
        if not alphas or not all(0 <= a <= 1 for a in alphas):
            raise ValueError(f"smoothquant: alpha must be in [0, 1] (or a non-empty list of such), got {alpha}")
        self.alphas, self.search = [float(a) for a in alphas], not isinstance(alpha, (int, float))
        self.w_bits, self.a_bits, self.max_rows, self.seed = w_bits, a_bits, max_rows, seed
        self.value_output = value_output

    @torch.no_grad()
    def before_quantize(self, adapter: ModelAdapter, batches: Sequence[dict]) -> dict:
        """Trace norm -> Linear and value -> output pairs on the batches, then smooth each whose fold is exact.
        Report entries are keyed by the norm, or by the attention module (with its `value` projection)."""
        reference = adapter.forward(batches[0])
        pairs, skipped = value_output_pairs(AttentionTrace(adapter, batches[0])) if self.value_output else ({}, {})
        layers = {}
        for name, group in self._trace(adapter, batches, pairs).items():
            # value -> output pairs were checked when found; a norm is checked here, on the task output
            if name not in pairs and not _fold_is_exact(adapter, batches[0], reference, group):
                skipped[name] = "the norm's output also feeds something other than these Linear layers"
                continue
            rows = torch.cat(group.rows)
            scored = [(self._error(rows, group, None), None)]
            scored += [(self._error(rows, group, self._factors(group, a)), a) for a in self.alphas]
            error, alpha = min(scored[1:] if not self.search else scored, key=lambda pair: pair[0])
            if alpha is not None:
                scale_channels(group.source, group.consumers.values(), self._factors(group, alpha))
            value = {"value": pairs[name].value} if name in pairs else {}
            layers[name] = {**value, "consumers": list(group.consumers), "alpha": alpha, "error": error,
                            "error_unsmoothed": scored[0][0]}
        return {"layers": layers, "skipped": skipped}

    def _trace(self, adapter: ModelAdapter, batches: Sequence[dict],
               pairs: dict[str, ValueOutput]) -> dict[str, _Group]:
        model, generator = adapter.model, torch.Generator().manual_seed(self.seed)
        per_batch = max(1, self.max_rows // len(batches))
        norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.LayerNorm) and m.weight is not None}
        groups = {name: _Group(norm) for name, norm in norms.items()}
        groups.update({name: _Group(p.value_layer, {p.output: p.output_layer}) for name, p in pairs.items()})
        outputs: dict[int, tuple[str, torch.Tensor]] = {}  # id of a norm output -> (norm, the tensor: keeps the id)

        def norm_hook(name):
            def hook(module, args, output):
                outputs[id(output)] = (name, output)
                groups[name].record(output, per_batch, generator)
            return hook

        def output_projection_hook(name):
            def hook(module, args):
                groups[name].record(args[0], per_batch, generator)
            return hook

        def linear_hook(name):
            def hook(module, args):
                source = outputs.get(id(args[0]))
                if source is not None and source[1] is args[0]:
                    groups[source[0]].consumers[name] = module
            return hook

        hooks = [m.register_forward_hook(norm_hook(n)) for n, m in norms.items()]
        hooks += [p.output_layer.register_forward_pre_hook(output_projection_hook(n)) for n, p in pairs.items()]
        hooks += [m.register_forward_pre_hook(linear_hook(n)) for n, m in model.named_modules()
                  if isinstance(m, nn.Linear)]
        try:
            for batch in batches:
                adapter.forward(batch)
                outputs.clear()
        finally:
            for h in hooks:
                h.remove()
        return {name: g for name, g in groups.items() if g.consumers}

    def _factors(self, group: _Group, alpha: float) -> torch.Tensor:
        w_amax = torch.stack([m.weight.detach().abs().amax(dim=0) for m in group.consumers.values()]).amax(dim=0)
        return (group.amax.clamp_min(1e-5).pow(alpha) / w_amax.clamp_min(1e-5).pow(1 - alpha)).clamp_min(1e-5)

    def _error(self, rows: torch.Tensor, group: _Group, factors: torch.Tensor | None) -> float:
        """Mean squared output error of the consumers with quantized inputs and weights, under `factors`."""
        factors = torch.ones_like(group.amax) if factors is None else factors
        _, a_max = integer_range(self.a_bits, True)
        _, w_max = integer_range(self.w_bits, True)
        a_scale = (group.amax / factors).max().clamp_min(1e-12) / a_max  # the range a min-max calibrator would set
        x = torch.clamp(torch.round(rows / factors / a_scale), -a_max - 1, a_max) * a_scale
        error = 0.0
        for layer in group.consumers.values():
            w = layer.weight.detach().float() * factors
            w_scale = (w.abs().amax(dim=1, keepdim=True) / w_max).clamp_min(1e-12)
            wq = torch.clamp(torch.round(w / w_scale), -w_max - 1, w_max) * w_scale
            error += float((x @ wq.T - rows @ layer.weight.detach().float().T).pow(2).mean())
        return error


def _fold_is_exact(adapter: ModelAdapter, batch: dict, reference: torch.Tensor, group: _Group) -> bool:
    # random factors in [0.5, 2]: a fold of these that keeps the output keeps it for any factors
    factors = torch.exp2(torch.rand(group.amax.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    params = [group.source.weight, group.source.bias] + [m.weight for m in group.consumers.values()]
    return fold_is_exact(lambda: adapter.forward(batch), reference, params,
                         lambda: scale_channels(group.source, group.consumers.values(), factors))
