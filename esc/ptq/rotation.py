"""Rotation (QuaRot-style, online form): multiply the input of chosen Linear layers by an orthogonal matrix Q
and their weight by Q too, so x W^T = (x Q)(W Q)^T is unchanged in exact arithmetic while the rotated input,
which is what the input quantizer sees, spreads its outlier channels over all channels.

With `convolutions`, a 1-d convolution's input channels are rotated the same way at every time step (each kernel
tap's (out, in) matrix times Q): a convolution is linear in its channels at each tap, and zero padding stays zero,
so the output is unchanged too. Grouped convolutions and one-channel inputs are left alone.

Q is a randomised Hadamard matrix (Sylvester Hadamard / sqrt(n) times random signs) when n is a power of two,
and a random orthogonal matrix (QR of a Gaussian) otherwise. The rotation of the input runs online, as a
forward pre-hook, for every matched layer; QuaRot's fusion of the rotation into the residual stream (which
removes most online rotations but needs LayerNorm-to-RMSNorm conversion) is not done.

With `value_output`, each attention's value channels are also rotated offline, head by head (one such Q of
size head_dim per head, folded into the value projection's rows and bias and the output projection's columns,
see `esc.ptq.attention_pairs`), so the value quantizer and the output projection's input quantizer see spread
channels at no online cost. When the output projection is matched too, its online rotation composes on top: the offline
fold is applied first, so that layer's input becomes (z Q_heads) Q and its weight W Q_heads Q, still exact;
the value quantizer sees z Q_heads, the output projection's input quantizer the fully mixed channels.

With `queries_keys`, each attention's query and key channels are rotated offline by one shared orthogonal block per
head (folded into both projections' rows and biases): the scores q k^T are unchanged, and the static query and key
quantizers see spread channels.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

from esc.models.base import ModelAdapter
from esc.ptq.attention_pairs import AttentionTrace, query_key_pairs, rotate_query_key, value_output_pairs
from esc.ptq.base import PTQStage, tied_parameters
from esc.ptq.folds import head_rotation, random_orthogonal, rotate_channels


class Rotation(PTQStage):
    """Rotate the inputs (and weights) of every Linear whose name matches one of the `match` globs; a weight
    tied to another module (Whisper's output projection) is left alone, since rotating it would change both.
    `value_output`: also rotate every attention's value channels head-wise, offline. `convolutions`: also
    rotate the input channels of every matched ungrouped Conv1d with more than one of them. `queries_keys`: also
    rotate every attention's query and key channels head-wise, offline."""

    name = "rotation"

    def __init__(self, match: Sequence[str] = ("*",), value_output: bool = True, convolutions: bool = False,
                 queries_keys: bool = False, seed: int = 0):
        self.match, self.value_output, self.convolutions = list(match), value_output, convolutions
        self.queries_keys, self.seed = queries_keys, seed

    def _rotatable(self, layer: nn.Module) -> bool:
        if isinstance(layer, nn.Linear):
            return True
        return self.convolutions and isinstance(layer, nn.Conv1d) and layer.groups == 1 and layer.in_channels > 1

    @torch.no_grad()
    def before_quantize(self, adapter: ModelAdapter, batches: Sequence[dict]) -> dict:
        """Rotate every matched Linear and every attention's values (and queries and keys); report the max/RMS
        ratio before and after of each layer's input, and of each attention's values, queries and keys (keyed by
        the attention module, suffixed ".query" / ".key" for those)."""
        generator, tied = torch.Generator().manual_seed(self.seed), tied_parameters(adapter.model)
        layers = {name: m for name, m in adapter.model.named_modules()
                  if self._rotatable(m) and m.weight.data_ptr() not in tied
                  and any(fnmatch.fnmatchcase(name, g) for g in self.match)}
        # drawn first, so the online rotations for a seed do not depend on `value_output`
        rotations = {name: random_orthogonal(m.weight.shape[1], generator) for name, m in layers.items()}
        trace = AttentionTrace(adapter, batches[0]) if self.value_output or self.queries_keys else None
        pairs, skipped = value_output_pairs(trace) if self.value_output else ({}, {})
        qk_pairs, qk_skipped = query_key_pairs(trace) if self.queries_keys else ({}, {})
        watched = {**{n: (m, "input") for n, m in layers.items()},
                   **{n: (p.value_layer, "output") for n, p in pairs.items()},
                   **{f"{n}.query": (p.query_layer, "output") for n, p in qk_pairs.items()},
                   **{f"{n}.key": (p.key_layer, "output") for n, p in qk_pairs.items()}}
        before = _peak_ratios(adapter, batches, watched)
        for pair in pairs.values():  # before the online rotations, which then compose on top (see above)
            rotate_channels(pair.value_layer, [pair.output_layer],
                            head_rotation(pair.output_layer.in_features, pair.head_dim, generator))
        for pair in qk_pairs.values():
            rotate_query_key(pair, generator)
        for name, layer in layers.items():
            rotation = rotations[name].to(layer.weight.device, layer.weight.dtype)
            if isinstance(layer, nn.Conv1d):  # (out, in, taps): each tap's (out, in) matrix times Q
                layer.weight.copy_(torch.einsum("oit,ij->ojt", layer.weight, rotation))
            else:
                layer.weight.copy_(layer.weight @ rotation)
            layer.register_forward_pre_hook(_rotate_input(rotation, channel_axis=1 if isinstance(layer, nn.Conv1d)
                                                          else -1))
        after = _peak_ratios(adapter, batches, watched)
        report = {n: {"peak_to_rms": after[n], "peak_to_rms_unrotated": before[n]} for n in layers}
        report.update({n: {"value": p.value, "output": p.output, "peak_to_rms": after[n],
                           "peak_to_rms_unrotated": before[n]} for n, p in pairs.items()})
        for n, p in qk_pairs.items():
            report.update({f"{n}.{role}": {role: layer, "peak_to_rms": after[f"{n}.{role}"],
                                           "peak_to_rms_unrotated": before[f"{n}.{role}"]}
                           for role, layer in (("query", p.query), ("key", p.key))})
        skipped.update({f"{n} (queries and keys)": why for n, why in qk_skipped.items()})
        return {"layers": report, "skipped": skipped}


def _rotate_input(rotation: torch.Tensor, channel_axis: int):
    def hook(module, args):
        x = args[0].movedim(channel_axis, -1) @ rotation.to(args[0].dtype)
        return (x.movedim(-1, channel_axis),) + tuple(args[1:])

    return hook


def _peak_ratios(adapter: ModelAdapter, batches: Sequence[dict],
                 watched: dict[str, tuple[nn.Module, str]]) -> dict[str, float]:
    # max|x| / rms(x) of each watched module's "input" or "output": the per-tensor quantization difficulty
    # rotation is meant to lower
    peaks: dict[str, list[float]] = {name: [0.0, 0.0, 0] for name in watched}

    def hook(name, side):
        def record(module, args, output):
            x = (args[0] if side == "input" else output).detach().float()
            p = peaks[name]
            p[0], p[1], p[2] = max(p[0], x.abs().max().item()), p[1] + x.pow(2).sum().item(), p[2] + x.numel()
        return record

    hooks = [m.register_forward_hook(hook(n, side)) for n, (m, side) in watched.items()]
    try:
        for batch in batches:
            adapter.forward(batch)
    finally:
        for h in hooks:
            h.remove()
    return {n: p[0] / max((p[1] / max(p[2], 1)) ** 0.5, 1e-12) for n, p in peaks.items()}
