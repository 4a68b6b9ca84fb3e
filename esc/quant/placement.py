"""Placement: which tensors get quantizers and how, as data (glob rules over quantizer names).

Quantizer names are module paths: `<layer>.weight_quantizer` and `<layer>.input_quantizer` for every Linear
and Conv1d/Conv2d, and `<attention>.{query,key,probs,value}_quantizer` for the two inputs of each of the two
attention matmuls (Q and K of QK^T, softmax probabilities and V of PV). Rules apply in order, later ones
overriding earlier ones, e.g.::

    rules:
      - {match: "*classifier*", enabled: false}          # keep the head in FP
      - {match: "*.probs_quantizer", symmetric: false}   # probabilities are non-negative
      - {match: "*.probs_quantizer", grid: log2}         # ... and mostly tiny: powers of two below the scale
      - {match: "model.encoder.conv1.*", bits: 8}        # first layer at 8 bits
      - {match: "*fc2.weight_quantizer", granularity: group, group_size: 64}
      - {match: "*patch_embeddings.*", bits: 8, optional: true}  # no warning for models without it

A rule that matches no quantizer of the model is logged as a warning (a mistyped glob), unless it is marked
`optional` (presets shared by several families name layers that only some of them have).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from esc.quant.spec import QuantSpec

log = logging.getLogger(__name__)

RULE_FIELDS = ("bits", "symmetric", "granularity", "enabled", "group_size", "grid", "clip_ratio")


@dataclass(frozen=True)
class Rule:
    """Override fields of the spec of every quantizer whose name matches the glob `match`."""

    match: str
    overrides: Mapping[str, object]
    optional: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping) -> "Rule":
        raw = dict(raw)
        if "match" not in raw:
            raise ValueError(f"placement rule {raw} has no 'match' glob")
        match = raw.pop("match")
        optional = bool(raw.pop("optional", False))
        unknown = sorted(set(raw) - set(RULE_FIELDS))
        if unknown:
            raise ValueError(f"placement rule {match!r}: unknown fields {unknown}; valid: {list(RULE_FIELDS)}")
        return cls(str(match), raw, optional)

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.match)


@dataclass
class Placement:
    """Default specs for weights and activations, whether attention matmuls are quantized, and rules."""

    weight: QuantSpec = field(default_factory=lambda: QuantSpec(8, True, "channel"))
    activation: QuantSpec = field(default_factory=lambda: QuantSpec(8, True, "tensor"))
    attention: bool = True
    rules: list[Rule] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: Mapping, extra_rules: Iterable[Mapping] = ()) -> "Placement":
        """Build from a quant preset mapping (`weight`, `activation`, `attention`, `rules`) plus model rules."""
        known = {"weight", "activation", "attention", "rules", "name", "weight_calibrator"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"quant config: unknown keys {unknown}; valid: {sorted(known)}")
        rules = [Rule.from_dict(r) for r in list(cfg.get("rules") or []) + list(extra_rules)]
        placement = cls(
            # a partial weight spec (e.g. only `bits`) keeps the per-channel default granularity
            weight=QuantSpec(**{"granularity": "channel", **dict(cfg.get("weight") or {})}),
            activation=QuantSpec(**dict(cfg.get("activation") or {})),
            attention=bool(cfg.get("attention", True)),
            rules=rules,
        )
        placement.weight.validated("<default weight>", "weight")
        placement.activation.validated("<default activation>", "activation")
        return placement

    def spec_for(self, name: str, kind: str) -> QuantSpec:
        """The validated spec of quantizer `name` after applying every matching rule in order."""
        spec = self.weight if kind == "weight" else self.activation
        for rule in self.rules:
            if rule.matches(name):
                spec = spec.with_overrides(**rule.overrides)
        return spec.validated(name, kind)

    def warn_unmatched(self, names: Iterable[str]) -> list[Rule]:
        """Log a warning for each rule that matches none of `names`; return those rules."""
        names = list(names)
        unmatched = [r for r in self.rules if not r.optional and not any(r.matches(n) for n in names)]
        for rule in unmatched:
            log.warning("placement rule %r matches no quantizer (is the pattern right for this model?)", rule.match)
        return unmatched
