"""One run: data, FP reference (cached), PTQ stages around quantization, calibrate, evaluate, write results.

Each stage logs one line with its duration. The run folder receives `scales.pt` (with ptq=none, load it with
`esc.quant.model.load_scales` into a model quantized with the same preset to skip calibration; PTQ stages also change
the weights), `predictions.json`, the resolved `config.yaml`, and last `results.json`, whose presence marks the run
finished.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from esc.budget import budget_curve
from esc.calib.weights import calibrate_weights
from esc.data.datamodule import AudioDataModule
from esc.evaluate import Evaluation, evaluate
from esc.metrics import relative_change_interval_or_none
from esc.models.base import ModelAdapter
from esc.models.registry import build_adapter
from esc.ptq.registry import build_stages, run_stages
from esc.quant.model import quantize_model, quantizers, save_scales
from esc.quant.placement import Placement
from esc.results import (RESULTS, calibration_options, finished, fp_cache_path, model_options, ptq_options,
                         quant_options, read_json, write_json)
from esc.run_record import record, record_search

log = logging.getLogger(__name__)


@contextmanager
def stage(name: str) -> Iterator[dict]:
    """Log `name` with its duration when the block ends; the yielded dict receives `seconds`."""
    timing = {}
    start = time.perf_counter()
    yield timing
    timing["seconds"] = time.perf_counter() - start
    log.info("stage %-24s %7.1f s", name, timing["seconds"])


def forward_loop_over(adapter: ModelAdapter, batches: Sequence[dict], desc: str):
    """A `forward_loop(model)` running every collated batch through the adapter's task forward.

    The adapter wraps the very model the calibrator passes in, so the argument is not needed to reach it.
    """

    def forward_loop(model: torch.nn.Module) -> None:
        for batch in tqdm(batches, desc=desc, unit="batch", leave=False):
            adapter.forward(batch)

    return forward_loop


def fp_reference(cfg: DictConfig, adapter: ModelAdapter, data: AudioDataModule, trainer: L.Trainer) -> dict:
    """The FP evaluation, from the cache when it covers exactly these evaluation clips, else computed and cached."""
    path = fp_cache_path(cfg)
    names = sorted(e.name for e in data.evaluation)
    if path.is_file():
        cached = read_json(path)
        if sorted(cached["predictions"]) == names:
            log.info("FP reference from cache %s", path)
            return cached
        log.warning("FP cache %s covers other clips; recomputing", path)
    with stage("evaluate FP"):
        fp = evaluate(adapter, trainer, data.test_dataloader(), "fp")
    cached = {"scores": fp.scores, "predictions": fp.predictions, "seconds": fp.seconds}
    write_json(path, cached)
    return cached


def calibration_targets(adapter: ModelAdapter, data: AudioDataModule) -> list[str] | None:
    """The clips' own targets, or where a clip has none, the FP model's prediction (seq2seq forwards need one)."""
    if all(e.target is not None for e in data.calibration):
        return None
    with stage("FP pseudo-labels"):
        predictions = [p for batch in data.calibration_dataloader() for p in adapter.predict(batch["inputs"])]
    return [e.target if e.target is not None else p for e, p in zip(data.calibration, predictions)]


def summarise(cfg: DictConfig, adapter: ModelAdapter, data: AudioDataModule, fp: dict, quantized: Evaluation,
              calibrator, calib_seconds: float, stages: Sequence, ptq_reports: list[dict]) -> dict:
    """The results record of a finished run."""
    metric = adapter.metric_name
    fp_value, q_value = fp["scores"][metric], quantized.scores[metric]
    results = {
        "model": cfg.model.name, "dataset": cfg.dataset.name, "quant": cfg.quant.name,
        "w_bits": cfg.quant.weight.bits if cfg.quant.weight.enabled else None,
        "a_bits": cfg.quant.activation.bits if cfg.quant.activation.enabled else None,
        "calibrator": calibrator.name,
        "calibrator_options": {k: v for k, v in OmegaConf.to_container(cfg.calibrator, resolve=True).items()
                               if not k.startswith("_")},
        # which calibration clips (size, folder, filter, seed): runs that differ here are different rows of a report
        "calibration_options": calibration_options(OmegaConf.to_container(cfg.dataset, resolve=True)),
        "ptq": [s.name for s in stages], "ptq_options": ptq_options(OmegaConf.to_container(cfg.ptq, resolve=True)),
        "model_options": model_options(OmegaConf.to_container(cfg.model, resolve=True)),
        "quant_options": quant_options(OmegaConf.to_container(cfg.quant, resolve=True)), "ptq_reports": ptq_reports,
        "seed": cfg.seed, "metric": metric, "fp": fp_value, "quantized": q_value,
        "relative_change": (q_value - fp_value) / fp_value if fp_value else None,
        "fidelity_kl": quantized.fidelity_kl, "agreement": quantized.agreement,
        "scores": {"fp": fp["scores"], "quantized": quantized.scores},
        "n_calib": len(data.calibration), "n_eval": len(data.evaluation),
        "calib_seconds": calib_seconds, "eval_seconds": quantized.seconds,
        "n_quantizers": sum(1 for _ in quantizers(adapter.model)),
        "n_bad_files": len(data.bad_files),
        "bad_files": [{"name": b.name, "reason": b.reason} for b in data.bad_files],
    }
    if "cer" in quantized.scores:
        results["cer"] = {"fp": fp["scores"]["cer"], "quantized": quantized.scores["cer"]}
    results["relative_change_interval"] = change_interval_or_none(metric, data, fp, quantized)
    return results


def change_interval_or_none(metric: str, data: AudioDataModule, fp: dict, quantized: Evaluation) -> list | None:
    """The 95% paired bootstrap interval of `relative_change` over the evaluation clips; None where it is undefined
    (FP without a single error or hit on some resample, or a metric without one), so a finished run never fails
    on it."""
    names = [e.name for e in data.evaluation]
    interval = relative_change_interval_or_none(metric, [fp["predictions"][n] for n in names],
                                                [quantized.predictions[n] for n in names],
                                                [e.target for e in data.evaluation])
    return None if interval is None else list(interval)


def model_and_data(cfg: DictConfig) -> tuple[ModelAdapter, AudioDataModule]:
    """Seed, threads, the model adapter and its read and checked data splits, as a run starts."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with stage("build model"):
        adapter = build_adapter(OmegaConf.to_container(cfg.model, resolve=True))
    with stage("read data"):
        data = AudioDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), adapter)
        data.setup()
    return adapter, data


@dataclass
class Calibrated:
    """What `quantize_and_calibrate` leaves besides the quantized model: the calibrator (with its search, for ESC),
    the PTQ stages (their `after_calibration` phase still to run), the calibration batches, the stage reports so
    far and the activation calibration's seconds."""

    calibrator: object
    stages: list
    batches: list[dict]
    ptq_reports: list[dict]
    seconds: float


def quantize_and_calibrate(cfg: DictConfig, adapter: ModelAdapter, data: AudioDataModule) -> Calibrated:
    """The run's PTQ stages before quantization, quantizers placed by the quant preset and the model's rules,
    weight grids, the weight-rewriting stages, then the activation calibrator, on the calibration split."""
    loader = data.calibration_dataloader(calibration_targets(adapter, data), pack=cfg.dataset.pack_calibration)
    batches = [batch["inputs"] for batch in loader]
    stages = build_stages(cfg.ptq.stages)
    calibrator = instantiate(cfg.calibrator)
    ptq_reports = run_stages(stages, "before_quantize", adapter, batches)
    with stage("quantize"):
        placement = Placement.from_config(OmegaConf.to_container(cfg.quant, resolve=True),
                                         OmegaConf.to_container(cfg.model.rules, resolve=True) or [])
        quantize_model(adapter.model, placement)
        calibrate_weights(adapter.model, calibrator.weight_method)  # the grid weight-rewriting stages work on
    ptq_reports += run_stages(stages, "after_weight_calibration", adapter, batches)
    bind = getattr(calibrator, "bind", None)
    if callable(bind):  # calibrators that score candidate scales on the task (ESC) need the calibration batches
        bind(adapter, batches)
    with stage("calibrate") as calib:
        calibrator.calibrate(adapter.model, forward_loop_over(adapter, batches, "calibration"))
    return Calibrated(calibrator, stages, batches, ptq_reports, calib["seconds"])


def run_experiment(cfg: DictConfig, run_dir: str | Path) -> dict | None:
    """Run the experiment of `cfg` into `run_dir`; return its results, or None when it had already finished."""
    run_dir = Path(run_dir)
    if finished(run_dir):
        log.info("skipped: %s already holds %s (remove it to re-run)", run_dir, RESULTS)
        return None
    adapter, data = model_and_data(cfg)
    logger = instantiate(cfg.logger, save_dir=str(run_dir))
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer = instantiate(cfg.trainer, logger=logger, default_root_dir=str(run_dir))

    fp = fp_reference(cfg, adapter, data, trainer)  # of the untouched model: PTQ stages may transform it below
    calibrated = quantize_and_calibrate(cfg, adapter, data)
    calibrator, stages = calibrated.calibrator, calibrated.stages
    save_scales(adapter.model, run_dir / "scales.pt")
    search = record_search(calibrator, run_dir, logger)
    with stage("budget curve"):  # the calibrator's own solutions, before any after_calibration stage
        curve = budget_curve(calibrator, list(cfg.get("budget_curve") or []), adapter, trainer,
                             data.test_dataloader, fp["predictions"])
    ptq_reports = calibrated.ptq_reports + run_stages(stages, "after_calibration", adapter, calibrated.batches)
    with stage("evaluate quantized"):
        quantized = evaluate(adapter, trainer, data.test_dataloader(), "quantized", fp["predictions"])

    results = summarise(cfg, adapter, data, fp, quantized, calibrator, calibrated.seconds, stages, ptq_reports)
    if search is not None:
        results["search"] = search
    if curve:
        results["budget_curve"] = curve
    record(cfg, run_dir, logger, results, {"fp": fp["predictions"], "quantized": quantized.predictions})
    return results
