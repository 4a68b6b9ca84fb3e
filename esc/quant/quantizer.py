"""Fake quantization: one `Quantizer` module per quantized tensor.

A quantizer rounds to nearest on an integer grid and maps back to float ("fake" quantization), with a
straight-through gradient (torch's fused fake-quant kernels pass the gradient inside the clipping range).
Static scales and zero points are buffers, so they travel with `state_dict`; dynamic per-token quantizers
compute theirs from each input, and their `scale` buffer holds a clip ratio instead: the fraction of each token's
range the grid covers (1 = the token's min/max), the one number a calibrator can still choose for them.
"""

from __future__ import annotations

import torch
from torch import nn

from esc.quant.log2_grid import fake_quantize_log2
from esc.quant.spec import QuantSpec
from esc.quant.uniform_grid import (dynamic_rows, fake_quantize_inference, fake_quantize_tokens, from_dynamic_rows,
                                    integer_range, range_to_qparams, weight_groups)


class Quantizer(nn.Module):
    """Fake-quantizes one tensor (a weight or an activation) according to a `QuantSpec`.

    `name` is the quantizer's path in the model (used in messages and placement rules), `kind` is
    "weight" or "activation", `axis` the channel axis of a weight (per-channel) or the feature axis of an
    activation (per-token: one scale per position, over this axis; per-group: one per `group_size` features of
    each position). Switched off, it returns its input
    object unchanged, so a model with every quantizer off computes exactly what the FP model computes.

    `population`, set only by `esc.calib.population` while ESC scores P candidates in one forward, holds
    (P, 1) scales and zero points that replace the static ones: the input's batch is P batches tiled
    candidate-major, and the rows of candidate i are quantized with the i-th pair (inference path).
    """

    def __init__(self, name: str, kind: str, spec: QuantSpec, axis: int = 0):
        super().__init__()
        if kind not in ("weight", "activation"):
            raise ValueError(f"quantizer {name!r}: kind must be 'weight' or 'activation', got {kind!r}")
        self.name, self.kind, self.axis = name, kind, axis
        self.spec = spec.validated(name, kind)
        self.enabled = spec.enabled
        self.observer = None  # set during the statistics pass: receives inputs instead of quantizing
        self.population: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.is_dynamic:  # the clip ratio, searched like a static scale (esc.calib.scale_vector)
            self.register_buffer("scale", torch.tensor(float(spec.clip_ratio)))
            self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        else:
            self.register_buffer("scale", torch.empty(0))
            self.register_buffer("zero_point", torch.empty(0, dtype=torch.int32))
        self._cache = None  # (source tensor, its version, scale version) -> fake-quantized weight

    @property
    def bits(self) -> int:
        return self.spec.bits

    @property
    def is_dynamic(self) -> bool:
        """Per-token (and token-group) quantizers compute their scales from each input and need no calibration."""
        return self.spec.is_dynamic(self.kind)

    @property
    def is_calibrated(self) -> bool:
        return self.is_dynamic or self.scale.numel() > 0

    def set_range(self, lo, hi) -> None:
        """Set scale and zero point from a clipping range (floats, or per-channel tensors)."""
        if self.is_dynamic:
            raise ValueError(f"quantizer {self.name!r} is per-token (dynamic): it has no static range to set; its "
                             "scale buffer is the clip ratio (set_qparams)")
        lo = torch.as_tensor(lo, dtype=torch.float32)
        hi = torch.as_tensor(hi, dtype=torch.float32)
        if self.spec.grid == "log2":  # the scale is the top level; the grid reaches down from it
            self.set_qparams(hi.clamp_min(1e-12), torch.zeros_like(hi, dtype=torch.int32))
            return
        scale, zero_point = range_to_qparams(lo, hi, self.spec.bits, self.spec.symmetric)
        self.set_qparams(scale, zero_point)

    def set_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        """Replace scale and zero point (shapes may change, e.g. per-tensor to per-channel)."""
        if not torch.isfinite(scale).all() or (scale <= 0).any():
            raise ValueError(f"quantizer {self.name!r}: scale must be finite and positive, got {scale}")
        # keep the module's device: calibrators hand over CPU floats, load_scales CPU tensors
        self.scale = scale.detach().to(self.scale.device, torch.float32).clone()
        self.zero_point = zero_point.detach().to(self.zero_point.device, torch.int32).clone()
        self._cache = None

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The float range [lo, hi] the current scale and zero point represent."""
        if self.spec.grid == "log2":
            return torch.zeros_like(self.scale), self.scale.clone()
        qmin, qmax = integer_range(self.spec.bits, self.spec.symmetric)
        return (qmin - self.zero_point) * self.scale, (qmax - self.zero_point) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.observer is not None:
            self.observer.update(x)
            return x
        if self.kind == "weight" and isinstance(x, nn.Parameter) and not torch.is_grad_enabled():
            return self._cached(x)
        return self._fake_quantize(x)

    def _cached(self, weight: nn.Parameter) -> torch.Tensor:
        # Weights change only through explicit updates (PTQ stages bump `_version`), so repeated
        # evaluations (sweeps, ESC's many forwards) reuse one fake-quantized copy. `weight.data = new`
        # keeps `_version` but moves the storage, hence `data_ptr`; in-place ops on `weight.data` are
        # invisible here (update weights in place under no_grad instead).
        key = (weight._version, weight.data_ptr(), self.scale._version, self.spec)
        if self._cache is None or self._cache[0] is not weight or self._cache[1] != key:
            self._cache = (weight, key, self._fake_quantize(weight))
        return self._cache[2]

    def _fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_dynamic:
            return self._fake_quantize_per_token(x)
        qmin, qmax = integer_range(self.spec.bits, self.spec.symmetric)
        if not self.is_calibrated:
            raise RuntimeError(f"quantizer {self.name!r} is enabled but not calibrated")
        if self.population is not None:
            return self._fake_quantize_population(x, qmin, qmax)
        if self.spec.grid == "log2":
            return fake_quantize_log2(x, self.scale, self.spec.bits)
        if self.scale.dim() == 0:
            if torch.is_grad_enabled() and x.requires_grad:
                return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, qmin, qmax)
            return fake_quantize_inference(x, self.scale, self.zero_point, qmin, qmax)
        if self.spec.granularity == "group":  # a weight: activation groups are dynamic (above)
            return self._fake_quantize_per_group(x, qmin, qmax)
        return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point, self.axis, qmin, qmax)

    def _population_size(self, x: torch.Tensor) -> int:
        """How many candidates `population` holds; `x`'s batch must be that many batches tiled."""
        count = self.population[0].shape[0]
        if x.shape[0] % count:
            raise RuntimeError(f"quantizer {self.name!r}: a batch of {x.shape[0]} is not {count} "
                               "candidates' batches tiled (see esc.calib.population)")
        return count

    def _fake_quantize_population(self, x: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
        scale, zero_point = self.population
        rows = x.reshape(self._population_size(x), -1)
        if self.spec.grid == "log2":
            return fake_quantize_log2(rows, scale, self.spec.bits).reshape(x.shape)
        return fake_quantize_inference(rows, scale, zero_point, qmin, qmax).reshape(x.shape)

    def _fake_quantize_per_group(self, x: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
        groups = weight_groups(x, self.spec.group_size)
        flat = groups.reshape(-1, groups.shape[-1])  # one row per scale, in the scale's (out, group) order
        out = torch.fake_quantize_per_channel_affine(flat, self.scale.reshape(-1), self.zero_point.reshape(-1), 0,
                                                     qmin, qmax)
        columns = x[0].numel()
        return out.reshape(x.shape[0], -1)[:, :columns].reshape(x.shape)

    @property
    def dynamic_group_size(self) -> int | None:
        """The features that share one dynamic scale: None for a whole token, else the group size."""
        return self.spec.group_size if self.spec.granularity == "group" else None

    def _fake_quantize_per_token(self, x: torch.Tensor) -> torch.Tensor:
        rows = dynamic_rows(x, self.axis, self.dynamic_group_size, self.name)
        ratio = self.scale
        if self.population is not None:  # each candidate's ratio for each of its rows
            ratio = self.population[0].reshape(-1).repeat_interleave(rows.shape[0] // self._population_size(x))
        out = fake_quantize_tokens(rows, ratio, self.spec.bits, self.spec.symmetric)
        return from_dynamic_rows(out, x, self.axis)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Scales are created empty and take their shape at calibration; adopt the saved shape on load.
        for key in ("scale", "zero_point"):
            saved = state_dict.get(prefix + key)
            if saved is not None:
                setattr(self, key, torch.empty_like(saved, device=getattr(self, key).device))
        self._cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        s = self.spec
        state = "on" if self.enabled else "off"
        return f"{self.kind}, {s.bits} bit, {s.grid_label}, per-{s.granularity_label}, {state}"
