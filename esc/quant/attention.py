"""Quantized attention, registered with transformers' `AttentionInterface` (no edits to model files).

The function is the eager attention of transformers with a quantizer on each matmul input: Q and K before
QK^T, the softmax probabilities and V before PV. The quantizers live on the attention module itself
(`query_quantizer`, ...), so the function finds them through the `module` argument it is called with.
"""

from __future__ import annotations

import inspect
from functools import cache

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

ATTENTION_IMPLEMENTATION = "esc_quant"
ATTENTION_QUANTIZERS = ("query_quantizer", "key_quantizer", "probs_quantizer", "value_quantizer")


def _maybe_quantize(module: nn.Module, attr: str, x: torch.Tensor) -> torch.Tensor:
    quantizer = getattr(module, attr, None)
    return x if quantizer is None else quantizer(x)


def quantized_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
):
    """Eager attention with fake-quantized matmul inputs; tensors are (batch, heads, tokens, head_dim)."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    query = _maybe_quantize(module, "query_quantizer", query)
    key = _maybe_quantize(module, "key_quantizer", key)
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    probs = _maybe_quantize(module, "probs_quantizer", weights)
    output = torch.matmul(probs, _maybe_quantize(module, "value_quantizer", value))
    return output.transpose(1, 2).contiguous(), weights


def register_quantized_attention() -> str:
    """Register the function and its mask (idempotent); return the implementation name to select.

    A custom attention name gets no causal mask unless a mask function is registered under the same name,
    so the eager mask is registered too; without it a decoder would silently attend to future tokens.
    """
    AttentionInterface.register(ATTENTION_IMPLEMENTATION, quantized_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_IMPLEMENTATION, eager_mask)
    return ATTENTION_IMPLEMENTATION


@cache
def _dispatches_through_interface(cls: type) -> bool:
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source


def is_attention_module(module: nn.Module) -> bool:
    """True for transformers modules whose forward calls the configurable attention function."""
    return _dispatches_through_interface(type(module))
