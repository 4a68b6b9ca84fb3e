"""Shared pieces of the PTQ tests: a minimal adapter over a bare module, and layers with correlated inputs."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from run_helpers import seeded_model


class ModuleAdapter:
    """Just what PTQ stages use of a ModelAdapter: `model` and `forward(batch)` returning a tensor."""

    def __init__(self, model: nn.Module):
        self.model = model

    def forward(self, batch: dict) -> torch.Tensor:
        out = self.model(**batch)
        return out if isinstance(out, torch.Tensor) else out[0]


class Single(nn.Module):
    """One layer, called as `model(x=...)` like a transformers model with keyword inputs."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


LAYER_KINDS = ("linear", "conv1d", "grouped_conv1d", "weight_normed_conv1d")


def make_layer(kind: str) -> nn.Module:
    """A small layer of one of the kinds the weight stages rewrite. The grouped and weight-normed convolutions
    are shaped like wav2vec2's positional convolution (groups; weight norm over the kernel axis, dim 2)."""
    if kind == "linear":
        return nn.Linear(48, 24)
    if kind == "conv1d":
        return nn.Conv1d(12, 16, 3, padding=1)
    conv = nn.Conv1d(32, 16, 5, padding=2, groups=4)
    return conv if kind == "grouped_conv1d" else weight_norm(conv, name="weight", dim=2)


def assert_on_grid(layer: nn.Module) -> None:
    """The layer's weight is a point of its quantizer's grid: exactly for a stored weight; within float rounding
    for one computed by a parametrization (g * v / |v| after writing v = W, g = |W|)."""
    weight = layer.weight.detach()
    if parametrize.is_parametrized(layer, "weight"):
        torch.testing.assert_close(layer.weight_quantizer(weight), weight, rtol=1e-6, atol=1e-9)
    else:
        assert torch.equal(layer.weight_quantizer(weight), weight)


def correlated_batches(layer: nn.Module, n_batches: int = 4, seed: int = 0) -> list[dict]:
    """Inputs whose channels are strongly correlated (a low-rank mix plus noise): where GPTQ and AdaRound
    beat round-to-nearest, since independent rounding errors no longer average out."""
    g = torch.Generator().manual_seed(seed)
    channels = layer.in_channels if isinstance(layer, (nn.Conv1d, nn.Conv2d)) else layer.in_features
    mix = torch.randn(4, channels, generator=g)
    batches = []
    for _ in range(n_batches):
        if isinstance(layer, nn.Conv1d):
            x = torch.einsum("btk,kc->bct", torch.randn(4, 40, 4, generator=g), mix)
        else:
            x = torch.randn(64, 4, generator=g) @ mix
        batches.append({"x": x + 0.05 * torch.randn(x.shape, generator=g)})
    return batches


def tiny_ast_with_batches(n_batches: int = 2):
    """The tiny AST (seeded weights) and `n_batches` batches of two labelled half-second noise clips."""
    adapter = seeded_model("ast_tiny")
    rng = np.random.default_rng(0)
    batches = [adapter.collate([(0.1 * rng.standard_normal(8000)).astype(np.float32) for _ in range(2)],
                               adapter.labels[:2]) for _ in range(n_batches)]
    return adapter, batches
