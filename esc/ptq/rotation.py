"""Rotation (QuaRot-style, online form): multiply the input of chosen Linear layers by an orthogonal matrix Q
and their weight by Q too, so x W^T = (x Q)(W Q)^T is unchanged in exact arithmetic while the rotated input,
which is what the input quantizer sees, spreads its outlier channels over all channels.

Q is a randomised Hadamard matrix (Sylvester Hadamard / sqrt(n) times random signs) when n is a power of two,
and a random orthogonal matrix (QR of a Gaussian) otherwise. The rotation of the input runs online, as a
forward pre-hook, for every matched layer; QuaRot's fusion of the rotation into the residual stream (which
removes most online rotations but needs LayerNorm-to-RMSNorm conversion) is not done.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

from esc.models.base import ModelAdapter
from esc.ptq.base import PTQStage, tied_parameters


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


class Rotation(PTQStage):
    """Rotate the inputs (and weights) of every Linear whose name matches one of the `match` globs; a weight
    tied to another module (Whisper's output projection) is left alone, since rotating it would change both."""

    name = "rotation"

    def __init__(self, match: Sequence[str] = ("*",), seed: int = 0):
        self.match, self.seed = list(match), seed

    @torch.no_grad()
    def before_quantize(self, adapter: ModelAdapter, batches: Sequence[dict]) -> dict:
        """Rotate every matched Linear; report, per layer, the input's max/RMS ratio before and after."""
        generator, tied = torch.Generator().manual_seed(self.seed), tied_parameters(adapter.model)
        layers = {name: m for name, m in adapter.model.named_modules()
                  if isinstance(m, nn.Linear) and m.weight.data_ptr() not in tied
                  and any(fnmatch.fnmatchcase(name, g) for g in self.match)}
        before = _peak_ratios(adapter, batches, layers)
        for layer in layers.values():
            rotation = random_orthogonal(layer.in_features, generator).to(layer.weight.device, layer.weight.dtype)
            layer.weight.copy_(layer.weight @ rotation)
            layer.register_forward_pre_hook(_rotate_input(rotation))
        after = _peak_ratios(adapter, batches, layers)
        return {"layers": {n: {"peak_to_rms": after[n], "peak_to_rms_unrotated": before[n]} for n in layers}}


def _rotate_input(rotation: torch.Tensor):
    def hook(module, args):
        return (args[0] @ rotation.to(args[0].dtype),) + tuple(args[1:])

    return hook


def _peak_ratios(adapter: ModelAdapter, batches: Sequence[dict], layers: dict[str, nn.Module]) -> dict[str, float]:
    # max|x| / rms(x) of each layer's input: the per-tensor quantization difficulty rotation is meant to lower
    peaks: dict[str, list[float]] = {name: [0.0, 0.0, 0] for name in layers}

    def hook(name):
        def record(module, args, output):
            x = args[0].detach().float()
            p = peaks[name]
            p[0], p[1], p[2] = max(p[0], x.abs().max().item()), p[1] + x.pow(2).sum().item(), p[2] + x.numel()
        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        for batch in batches:
            adapter.forward(batch)
    finally:
        for h in hooks:
            h.remove()
    return {n: p[0] / max((p[1] / max(p[2], 1)) ** 0.5, 1e-12) for n, p in peaks.items()}
