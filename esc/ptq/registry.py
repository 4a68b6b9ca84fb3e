"""Build PTQ stages from the `ptq` config group and run one phase of them, in order, with timing."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence

from hydra.utils import instantiate

from esc.models.base import ModelAdapter
from esc.ptq.base import PHASES, PTQStage

log = logging.getLogger(__name__)


def build_stages(cfg_list: Iterable[Mapping]) -> list[PTQStage]:
    """Instantiate each `{_target_: ..., **options}` entry of `ptq.stages`, keeping the order."""
    stages = []
    for cfg in cfg_list or []:
        stage = instantiate(cfg)
        if not isinstance(stage, PTQStage):
            raise TypeError(f"ptq stage {cfg.get('_target_')!r} built a {type(stage).__name__}, not a PTQStage")
        stages.append(stage)
    return stages


def run_stages(stages: Sequence[PTQStage], phase: str, adapter: ModelAdapter, batches: Sequence[dict]) -> list[dict]:
    """Run `phase` (one of PHASES) of every stage in order; return the reports of the stages that act in this
    phase, each with `stage`, `phase` and `seconds` added."""
    if phase not in PHASES:
        raise ValueError(f"unknown PTQ phase {phase!r}; valid: {PHASES}")
    reports = []
    for stage in stages:
        start = time.perf_counter()
        report = getattr(stage, phase)(adapter, batches)
        if report is None:
            continue
        seconds = time.perf_counter() - start
        log.info("ptq %s (%s): %.1f s", stage.name, phase, seconds)
        reports.append({"stage": stage.name, "phase": phase, "seconds": seconds, **report})
    return reports
