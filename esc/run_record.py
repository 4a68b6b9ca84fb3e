"""Writing a finished run: the search's records (for calibrators that search), the logger's metrics, and the run
folder's files, `results.json` last since its presence marks the run finished."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from esc.results import RESULTS, write_atomic, write_json


def record_search(calibrator, run_dir: Path, logger) -> dict | None:
    """For calibrators that search (ESC): the local step's per-block report (`local_search.json`), the start's
    bias correction (`start_bias_correction.json`), the per-generation history to the logger and
    `search_history.json`, the convergence plot, and a summary for results.json. None for one-shot calibrators."""
    summary = {}
    local = getattr(calibrator, "local_report", None)
    if local:  # the block step: per-block reconstruction errors, before and after
        write_json(run_dir / "local_search.json", local)
        summary.update(local_blocks=len(local), local_seconds=sum(r["seconds"] for r in local.values()))
    start_bias = getattr(calibrator, "start_bias_report", None)
    if start_bias:  # ESC's bias correction of its local start: per-layer offsets, kept or not, calibration KL
        write_json(run_dir / "start_bias_correction.json", start_bias)
        summary.update(start_bias_kl=[start_bias["kl_before"], start_bias["kl_after"]],
                       start_bias_kept=sum(r["kept"] for r in start_bias["layers"].values()))
    history = getattr(calibrator, "history", None)
    if not history:  # a budget that allows no generation still records its local step
        return summary or None
    for entry in history:
        logger.log_metrics({f"search/{k}": float(v) for k, v in entry.items() if k != "generation"},
                           step=int(entry["generation"]))
    write_json(run_dir / "search_history.json", history)
    # the solution after every generation, so budget curves can evaluate it without searching again
    np.save(run_dir / "search_snapshots.npy", np.stack(calibrator.snapshots))
    calibrator.save_plot(run_dir / "search_convergence.png")
    summary.update(start_fitness=calibrator.start_fitness, best_fitness=calibrator.best_fitness,
                   generations=len(history), evaluations=history[-1]["evaluations"],
                   evals_per_s=history[-1]["evals_per_s"], searched_scales=len(calibrator.searched_scales))
    if calibrator.validation is not None:
        summary["start_validation"], summary["chosen_validation"] = calibrator.validation
    return summary


def record(cfg: DictConfig, run_dir: Path, logger, results: dict, predictions: dict) -> None:
    """Log the results, close the logger, write the run's files (results.json last) and print the summary line."""
    logger.log_metrics({k: float(v) for k, v in results.items() if isinstance(v, (int, float)) and v is not None})
    logger.finalize("success")
    close = getattr(logger.experiment, "finish", None)
    if callable(close):  # a W&B run stays open until finished; the next job of a multirun must get its own
        close()
    write_json(run_dir / "predictions.json", predictions)
    write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json(run_dir / RESULTS, results)
    rel = "n/a" if results["relative_change"] is None else f"{results['relative_change']:+.1%}"
    print(f"{results['model']} {results['quant']} (W{results['w_bits']}A{results['a_bits']}) {results['calibrator']}: "
          f"FP {results['metric']}={results['fp']:.4f} -> quantized {results['metric']}={results['quantized']:.4f} "
          f"({rel})")
