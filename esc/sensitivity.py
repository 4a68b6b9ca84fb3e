"""`python -m esc.sensitivity [run overrides]`: which quantizers cost the fidelity, group by group.

Quantizes and calibrates exactly as `esc.run` does with the same overrides (model, data, quant, calibrator, PTQ
stages), then measures the label-free KL to the FP model (`esc.calib.fitness`, the measure ESC and `fidelity_kl`
use) on the first `eval_batches` evaluation batches: once with every quantizer on, and once per group with that
group switched off (kept in FP). A group's `recovered` share is the part of the KL that keeping it in FP removes.
Groups default to one per quantizer role, i.e. quantizer names with layer indices replaced by `*`
(`wav2vec2.feature_extractor.conv_layers.*.conv.input_quantizer`); `groups=[glob, ...]` sets them instead.

    python -m esc.sensitivity model=wav2vec2_kws dataset=folder dataset.path=DIR quant=w8a8 calibrator=mse

writes `sensitivity.json` to its folder and prints the groups ordered by the KL they recover.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from esc.calib.fitness import Fitness
from esc.experiment import model_and_data, quantize_and_calibrate
from esc.ptq.registry import run_stages
from esc.quant.model import quantizers, switched_off
from esc.quant.quantizer import Quantizer
from esc.results import register_resolvers, write_json

log = logging.getLogger(__name__)
register_resolvers()

_INDEX = re.compile(r"\.\d+(?=\.)")


def quantizer_groups(model: torch.nn.Module, globs: Iterable[str] | None = None) -> dict[str, list[Quantizer]]:
    """Enabled quantizers by group: by `globs` (a quantizer may fall in several), else by role (indices -> `*`)."""
    enabled = [q for q in quantizers(model) if q.enabled]
    if globs is None:
        groups: dict[str, list[Quantizer]] = {}
        for q in enabled:
            groups.setdefault(_INDEX.sub(".*", q.name), []).append(q)
        return groups
    groups = {glob: [q for q in enabled if fnmatch.fnmatchcase(q.name, glob)] for glob in globs}
    empty = [glob for glob, members in groups.items() if not members]
    if empty:
        raise ValueError(f"sensitivity: no enabled quantizer matches {empty}")
    return groups


@torch.no_grad()
def group_sensitivity(model: torch.nn.Module, fitness: Fitness, groups: dict[str, list[Quantizer]]) -> dict:
    """KL with everything quantized, and per group with the group off; groups ordered by the KL they recover."""
    full = fitness(model)
    rows = []
    for name, members in groups.items():
        with switched_off(members):
            without = fitness(model)
        log.info("sensitivity: %s (%d quantizers) in FP: KL %.4g (all quantized: %.4g)", name, len(members),
                 without, full)
        rows.append({"group": name, "quantizers": len(members), "kl_without": without,
                     "recovered": full - without, "share": (full - without) / full if full > 0 else 0.0})
    rows.sort(key=lambda row: row["recovered"], reverse=True)
    return {"kl": full, "groups": rows}


def run_sensitivity(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Quantize and calibrate as `esc.run` would, measure every group's sensitivity, write `sensitivity.json`."""
    adapter, data = model_and_data(cfg)
    calibrated = quantize_and_calibrate(cfg, adapter, data)
    ptq_reports = calibrated.ptq_reports + run_stages(calibrated.stages, "after_calibration", adapter,
                                                      calibrated.batches)
    batches = [batch["inputs"] for batch in islice(data.test_dataloader(), cfg.eval_batches)]
    groups = quantizer_groups(adapter.model, None if cfg.groups is None else list(cfg.groups))
    result = {"model": cfg.model.name, "quant": cfg.quant.name, "calibrator": calibrated.calibrator.name,
              "ptq": [s.name for s in calibrated.stages], "seed": cfg.seed, "eval_batches": len(batches),
              "n_quantizers": sum(1 for q in quantizers(adapter.model) if q.enabled),
              **group_sensitivity(adapter.model, Fitness(adapter, batches), groups),
              "ptq_reports": ptq_reports}
    write_json(Path(out_dir) / "sensitivity.json", result)
    return result


def format_table(result: dict, limit: int | None = None) -> str:
    """The groups as text lines: recovered share, KL without the group, quantizer count, name."""
    lines = [f"KL with every quantizer on: {result['kl']:.4g} nats"]
    for row in islice(result["groups"], limit):
        lines.append(f"{row['share']:7.1%}  {row['kl_without']:.4g}  {row['quantizers']:3d}  {row['group']}")
    return "\n".join(lines)


@hydra.main(config_path="../conf", config_name="sensitivity", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out_dir = HydraConfig.get().runtime.output_dir
    print(format_table(run_sensitivity(cfg, out_dir), cfg.show))
    print(f"written: {Path(out_dir) / 'sensitivity.json'}")


if __name__ == "__main__":
    main()
