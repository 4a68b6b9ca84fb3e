"""Insert quantizers into a transformers model, list them, switch them, save and load their scales.

Linear and Conv layers keep their place and parameters: their class is swapped for a subclass whose forward
fake-quantizes the input and the weight, so state_dict keys, parametrizations (wav2vec2's weight-normed
positional convolution) and `isinstance` checks all keep working. Attention modules get four activation
quantizers and the model switches to the quantized attention function.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from esc.quant.attention import ATTENTION_QUANTIZERS, is_attention_module, register_quantized_attention
from esc.quant.placement import Placement
from esc.quant.quantizer import Quantizer

QUANTIZABLE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


class QuantizedLayer:
    """Mixin placed in front of a Linear/Conv class: quantize input and weight, then run the layer's math."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quantizer(x)
        weight = self.weight_quantizer(self.weight)
        if isinstance(self, nn.Linear):
            return F.linear(x, weight, self.bias)
        return self._conv_forward(x, weight, self.bias)


_QUANTIZED_CLASSES: dict[type, type] = {}


def _quantized_class(cls: type) -> type:
    if cls not in _QUANTIZED_CLASSES:
        _QUANTIZED_CLASSES[cls] = type(f"Quantized{cls.__name__}", (QuantizedLayer, cls), {"_fp_class": cls})
    return _QUANTIZED_CLASSES[cls]


def _feature_axis(layer: nn.Module) -> int:
    # Linear inputs carry features last; convolution inputs carry channels in dimension 1.
    return -1 if isinstance(layer, nn.Linear) else 1


def quantize_model(model: nn.Module, placement: Placement) -> nn.Module:
    """Insert quantizers in place as `placement` says, and select the quantized attention function.

    Every spec is resolved (and validated) before the model is touched, so a bad bit width or granularity
    fails before any work. Rules that match no quantizer are reported as warnings.
    """
    if any(isinstance(m, Quantizer) for m in model.modules()):
        raise ValueError("model already holds quantizers; quantize a fresh FP model")
    plan = []
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, QUANTIZABLE_LAYERS):
            plan.append((module, "weight_quantizer", f"{prefix}weight_quantizer", "weight", 0))
            plan.append((module, "input_quantizer", f"{prefix}input_quantizer", "activation", _feature_axis(module)))
        elif placement.attention and is_attention_module(module):
            plan += [(module, attr, f"{prefix}{attr}", "activation", -1) for attr in ATTENTION_QUANTIZERS]
    specs = [placement.spec_for(name, kind) for _, _, name, kind, _ in plan]
    placement.warn_unmatched(name for _, _, name, _, _ in plan)

    for (module, attr, name, kind, axis), spec in zip(plan, specs):
        # scales live where the layer lives (a model quantized after `.to("cuda")` calibrates on the GPU)
        device = next(module.parameters(), torch.empty(0)).device
        module.add_module(attr, Quantizer(name, kind, spec, axis=axis).to(device))
        if isinstance(module, QUANTIZABLE_LAYERS) and not isinstance(module, QuantizedLayer):
            module.__class__ = _quantized_class(type(module))
    if placement.attention and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(register_quantized_attention())
    return model


def quantizers(model: nn.Module, kind: str | None = None) -> Iterator[Quantizer]:
    """All quantizers of the model in module order, optionally only weights or activations."""
    for module in model.modules():
        if isinstance(module, Quantizer) and (kind is None or module.kind == kind):
            yield module


def set_enabled(model: nn.Module, enabled: bool, kind: str | None = None) -> None:
    """Switch quantizers on or off (those whose spec says off stay off when switching on)."""
    for q in quantizers(model, kind):
        q.enabled = enabled and q.spec.enabled


def quantizers_off(model: nn.Module, kind: str | None = None) -> AbstractContextManager[None]:
    """Switch the model's quantizers (all, or one kind) off for a block, restoring each one's own state afterwards."""
    return switched_off(quantizers(model, kind))


@contextmanager
def switched_off(chosen: Iterable[Quantizer]) -> Iterator[None]:
    """Switch the given quantizers off for a block, restoring each one's own state afterwards."""
    states = [(q, q.enabled) for q in chosen]
    for q, _ in states:
        q.enabled = False
    try:
        yield
    finally:
        for q, enabled in states:
            q.enabled = enabled


def census(model: nn.Module) -> str:
    """One line per quantizer (name, kind, bits, granularity, scale) and the closing count line."""
    lines = []
    for q in quantizers(model):
        if q.is_dynamic:
            scale = f"dynamic clip={q.scale.item():.4g}"
        elif not q.is_calibrated:
            scale = "uncalibrated"
        elif q.scale.dim() == 0:
            scale = f"scale={q.scale.item():.4g}"
        else:
            scale = f"scale=[{q.scale.min().item():.3g}..{q.scale.max().item():.3g}] x{q.scale.numel()}"
        state = "" if q.enabled else " off"
        lines.append(f"{q.name} {q.kind} {q.bits}b {q.spec.grid_label} per-{q.spec.granularity_label} {scale}{state}")
    n_weight = sum(1 for _ in quantizers(model, "weight"))
    n_act = sum(1 for _ in quantizers(model, "activation"))
    lines.append(f"{n_weight + n_act} quantizers ({n_weight} weight, {n_act} activation)")
    return "\n".join(lines)


def quantizer_state(model: nn.Module) -> dict[str, dict]:
    """Scales and zero points of every calibrated quantizer (a per-token one's clip ratio), keyed by name."""
    return {
        q.name: {"scale": q.scale.clone(), "zero_point": q.zero_point.clone(), "bits": q.bits, "grid": q.spec.grid}
        for q in quantizers(model)
        if q.is_calibrated
    }


def save_scales(model: nn.Module, path: str | Path) -> Path:
    """Write every calibrated scale and zero point to `path` (a torch file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(quantizer_state(model), path)
    return path


def load_scales(model: nn.Module, path: str | Path) -> set[str]:
    """Load scales saved by `save_scales` into a model quantized with the same placement; return the names of
    the quantizers the file held."""
    saved = torch.load(Path(path), weights_only=True)
    by_name = {q.name: q for q in quantizers(model)}
    missing = sorted(set(saved) - set(by_name))
    if missing:
        raise ValueError(f"{path}: scales for quantizers this model does not have: {missing[:5]}")
    for name, entry in saved.items():
        if entry["bits"] != by_name[name].bits:
            raise ValueError(f"{path}: {name} was calibrated at {entry['bits']} bits, model has {by_name[name].bits}")
        grid = entry.get("grid", "uniform")  # files written before log2 grids existed hold uniform scales
        if grid != by_name[name].spec.grid:
            raise ValueError(f"{path}: {name} was calibrated on a {grid} grid, model has {by_name[name].spec.grid}")
        by_name[name].set_qparams(entry["scale"], entry["zero_point"])
    return set(saved)
