"""What tells finished runs apart in a report: the settings that make a row (calibrator and its options, calibration
clips, PTQ stages and their options, model placement) or a column (a quant preset and its overrides), and the
labels that show, for runs sharing a name, only the settings in which they differ. Seeds are never among them:
runs differing only in seeds are one row's samples.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from esc.results import ID_NEUTRAL, calibration_options, model_options, ptq_options, quant_options, read_json

# Calibrator settings that do not change a run's result (a resumed search ends where an uninterrupted one does).
NOT_ROW_OPTIONS = {"seed", "checkpoint_dir", "resume"}
_NONE = object()  # a setting a run does not have (no neutral value)
_NEUTRAL = {f"{group}.{k}": v for group, values in ID_NEUTRAL.items() for k, v in values.items()}


def _row_options(run: dict) -> dict:
    """The settings that define a row: the calibrator's options, which calibration clips it saw (size, folder,
    filter), each PTQ stage's options (as `stage.option`) and the model's placement rules and front-end filter.
    Seeds (the calibration draw's, a calibrator's own sampling seed: by default the run's) are not: runs differing
    only in them are pooled into one row's mean and spread. Settings added later are left out at the value that
    reproduces the runs made before them (`ID_NEUTRAL`), so those runs and newer ones at that value share a row."""
    options = {k: v for k, v in run.get("calibrator_options", {}).items()
               if k not in NOT_ROW_OPTIONS and _NEUTRAL.get(f"calibrator.{k}", _NONE) != v}
    options.update({k: v for k, v in run.get("calibration_options", {}).items() if k != "calibration_seed"})
    names = run.get("ptq") or []
    for i, (name, stage) in enumerate(zip(names, run.get("ptq_options") or [])):
        prefix = name if names.count(name) == 1 else f"{name}#{i}"
        options.update({f"{prefix}.{k}": v for k, v in stage.items()})
    # no rules ([]) is every model config's default, and a run that recorded no model options had none
    options.update({k: v for k, v in (run.get("model_options") or {}).items()
                    if _NEUTRAL.get(f"model.{k}", _NONE) != v and v != []})
    return options


def read_run(path: Path) -> dict:
    """One run's results.json; settings that results.json did not record when the run was written (its
    calibration clips, PTQ stage options, model placement, quant preset settings) come from the resolved
    `config.yaml` beside it, so the run is not pooled with runs of other settings."""
    run = read_json(path)
    config = path.parent / "config.yaml"
    missing = [key for key in ("calibration_options", "ptq_options", "model_options", "quant_options")
               if key not in run]
    if missing and config.is_file():
        resolved = OmegaConf.to_container(OmegaConf.load(config))
        recorders = {"calibration_options": (calibration_options, "dataset"), "ptq_options": (ptq_options, "ptq"),
                     "model_options": (model_options, "model"), "quant_options": (quant_options, "quant")}
        for key in missing:
            recorder, group = recorders[key]
            run[key] = recorder(resolved.get(group) or {})
    return run


def _suffixes(runs: Sequence[dict], family, settings) -> list[str]:
    """Per run, " (k=v, ...)" for the `settings(run)` that differ among the runs of its `family(run)`, or ""."""
    owns = [settings(run) for run in runs]
    variants = defaultdict(list)
    for run, own in zip(runs, owns):
        if own not in variants[family(run)]:
            variants[family(run)].append(own)
    suffixes = []
    for run, own in zip(runs, owns):
        options = variants[family(run)]
        keys = set().union(*options)  # a setting only some runs have also tells them apart
        varying = sorted(k for k in keys if any(o.get(k, _NONE) != options[0].get(k, _NONE) for o in options))
        shown = [f"{k}={own[k]}" for k in varying if k in own]
        suffixes.append(f" ({', '.join(shown)})" if shown else "")
    return suffixes


def calibrator_labels(runs: Sequence[dict]) -> list[str]:
    """Row label per run: the PTQ stages (if any) and the calibrator name, plus the settings (`_row_options`) that
    tell apart runs sharing that calibrator and chain (e.g. `rotation + mse (rotation.convolutions=True)`)."""
    suffixes = _suffixes(runs, lambda run: (run["calibrator"], tuple(run.get("ptq") or [])), _row_options)
    labels = []
    for run, suffix in zip(runs, suffixes):
        stages = run.get("ptq") or []
        label = run["calibrator"] + suffix
        labels.append(f"{'+'.join(stages)} + {label}" if stages else label)  # PTQ chains are rows of their own
    return labels


def _flat(value: dict, prefix: str = "") -> dict:
    """A nested config as {dotted.key: leaf value} (lists, such as rules, are leaves)."""
    flat = {}
    for key, item in value.items():
        if isinstance(item, dict) and item:
            flat.update(_flat(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


def quant_labels(runs: Sequence[dict]) -> list[str]:
    """Column label per run: its quant preset's name, plus the preset settings that tell apart runs of that name
    (an override such as `quant.activation.symmetric=false` is a column of its own, not pooled with the preset)."""
    suffixes = _suffixes(runs, lambda run: run["quant"], lambda run: _flat(run.get("quant_options") or {}))
    return [run["quant"] + suffix for run, suffix in zip(runs, suffixes)]
