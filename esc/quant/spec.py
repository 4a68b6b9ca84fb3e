"""`QuantSpec`: how one tensor is quantized (bit width, grid, granularity), validated against its kind."""

from __future__ import annotations

from dataclasses import dataclass, replace

GRANULARITIES = ("tensor", "channel", "group", "token")
GRIDS = ("uniform", "log2")
WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
ACTIVATION_BITS = (2, 3, 4, 5, 6, 7, 8)


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized: bit width, symmetric or asymmetric, granularity, on or off, grid.

    Granularity "group" gives a weight one scale per `group_size` consecutive weights of each output channel
    along its flattened input dimension (in_features, or in_channels * kernel for a convolution), and an
    activation one dynamic scale per `group_size` consecutive features of each token (as "token", but finer: the
    group-wise activations of Atom and of the MX/NVFP4 formats).
    Grid "log2" (per-tensor, non-negative activations: `symmetric: false`) puts the levels at powers of two below
    the scale (`esc.quant.log2_grid`), for softmax probabilities. `clip_ratio` (dynamic activations only: per
    token or token group) is the starting fraction of each token's (or group's) range the grid covers; ESC
    searches it per quantizer.
    """

    bits: int = 8
    symmetric: bool = True
    granularity: str = "tensor"
    enabled: bool = True
    group_size: int = 128
    grid: str = "uniform"
    clip_ratio: float = 1.0

    def validated(self, name: str, kind: str) -> "QuantSpec":
        """Return self, or raise a ValueError naming the quantizer when a field is out of range."""
        allowed = WEIGHT_BITS if kind == "weight" else ACTIVATION_BITS
        if self.bits not in allowed:
            raise ValueError(f"quantizer {name!r}: {self.bits} bits is out of range for a {kind}; allowed: {allowed}")
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"quantizer {name!r}: group_size must be a positive integer, got {self.group_size!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"quantizer {name!r}: unknown granularity {self.granularity!r}; valid: {GRANULARITIES}")
        if kind == "weight" and self.granularity == "token":
            raise ValueError(f"quantizer {name!r}: per-token granularity is for activations, not weights")
        if kind == "activation" and self.granularity == "channel":
            raise ValueError(f"quantizer {name!r}: per-channel granularity is for weights; use 'token' or 'tensor'")
        if kind == "activation" and self.granularity == "group" and self.group_size < 2:
            raise ValueError(f"quantizer {name!r}: activation groups of {self.group_size!r} feature(s) would give "
                             "every value its own scale (no quantization); use group_size >= 2")
        if self.grid not in GRIDS:
            raise ValueError(f"quantizer {name!r}: unknown grid {self.grid!r}; valid: {GRIDS}")
        if self.grid == "log2" and (kind != "activation" or self.granularity != "tensor" or self.symmetric):
            raise ValueError(f"quantizer {name!r}: a log2 grid is for per-tensor non-negative activations (softmax "
                             f"probabilities): needs granularity 'tensor' and symmetric false, and no weight")
        if not 0.0 < self.clip_ratio <= 1.0:
            raise ValueError(f"quantizer {name!r}: clip_ratio must be in (0, 1], got {self.clip_ratio!r}")
        if self.clip_ratio != 1.0 and not self.is_dynamic(kind):
            raise ValueError(f"quantizer {name!r}: clip_ratio is for per-token (or token-group) activation "
                             f"quantizers; a static range comes from the calibrator (got clip_ratio "
                             f"{self.clip_ratio} at per-{self.granularity} {kind})")
        return self

    def is_dynamic(self, kind: str) -> bool:
        """Whether a `kind` tensor with this spec takes its scales from each input (per token or token group)."""
        return kind == "activation" and self.granularity in ("token", "group")

    @property
    def granularity_label(self) -> str:
        """How the granularity is printed: "group64" for groups of 64, else the granularity itself."""
        return f"group{self.group_size}" if self.granularity == "group" else self.granularity

    @property
    def grid_label(self) -> str:
        """How the grid is printed: "log2", or "sym" / "asym" for a uniform grid."""
        return "log2" if self.grid == "log2" else ("sym" if self.symmetric else "asym")

    def with_overrides(self, **fields) -> "QuantSpec":
        """A copy with the given fields replaced."""
        return replace(self, **fields)
