"""ESC: Evolution-Strategy-based Calibration of activation scales.

Local step: every static activation quantizer gets its MSE-optimal range from the one statistics pass (this
class is an `MSECalibrator`); with `local_search`, each transformer block's scales are then refined against the
block's output reconstruction error on cached block inputs (`esc.calib.local_search`). Global step: CMA-ES
searches all those scales jointly, as log-multipliers of the local solution bounded to [-bound, bound], minimising
a task-level fitness of the whole quantized model (`esc.calib.fitness`); the best scales found, never worse than
the local start, are written to the model. `search` (globs over quantizer names) narrows the global step to the
quantizers that matter (e.g. those `esc.sensitivity` ranks first); the others keep their local start.
With `start_bias_correction`, the local start's layer biases are first corrected (guarded empirical bias correction,
`esc.ptq.bias_correction`, on the fitness batches), so the search scores every candidate in the corrected model
rather than leaving the correction to a stage after it that the search never sees.
Per-token (dynamic) quantizers join the search through their clip ratio (`esc.calib.scale_vector`), starting
from the configured `clip_ratio`, which every other calibrator keeps.
Multiplying a scale by m multiplies the clipping range by m and keeps the zero point (asymmetric included).

How a run harness calls it (the only extension of the calibrator protocol is the fitness)::

    calibrator = ESCCalibrator(**cfg.calibrator)           # settings validated here, before any work
    calibrator.bind(adapter, calibration_batches)          # builds the configured fitness (kl | task_loss)
    calibrator.calibrate(adapter.model, forward_loop)      # weights, statistics, MSE start, CMA-ES
    calibrator.history                                     # one dict per generation (best, mean, spread, ...)
    calibrator.save_plot(run_dir / "esc_convergence.png")

`calibrate(model, forward_loop, fitness=...)` accepts any `Fitness` directly instead of `bind`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from torch import nn

from esc.calib.base import ForwardLoop
from esc.calib.cma_search import SearchSettings, SearchState, run_search
from esc.calib.convergence_plot import save_convergence_plot
from esc.calib.fitness import FITNESS_KINDS, Fitness, make_fitness
from esc.calib.local_search import refine_blocks
from esc.calib.mse import MSECalibrator
from esc.calib.population import BATCHED_FITNESS_KINDS, population_objective
from esc.calib.scale_vector import ScaleVector, unmatched_globs
from esc.calib.stats import ActivationStats
from esc.models.base import ModelAdapter
from esc.ptq.bias_correction import BiasCorrection

log = logging.getLogger(__name__)


class ESCCalibrator(MSECalibrator):
    """MSE local start, then a CMA-ES search over all activation scales (and clip ratios) on a task-level fitness.

    Settings are those of `SearchSettings` plus `fitness` (kl | task_loss) and the MSE options; see
    conf/calibrator/esc.yaml. After `calibrate`, `history` holds one dict per generation, `start_fitness` and
    `best_fitness` the fitness of the local start and the best found on it, `best_log_multipliers` the
    solution written (with `validation_batches`, the best on the held-out batches, see `validation`).
    """

    name = "esc"

    def __init__(self, fitness: str = "kl", popsize: int | None = None, sigma0: float = 0.1, bound: float = 0.7,
                 max_generations: int = 50, max_evals: int | None = None, timeout_s: float | None = None,
                 tolfun: float = 1e-8, fitness_batches: int | None = None, resample: bool = False,
                 diagonal: bool = False, seed: int = 0, checkpoint_dir: str | None = None, resume: bool = False,
                 validation_batches: int = 0, patience: int | None = None, local_search: bool = False,
                 local_evals: int = 60, local_max_batches: int | None = 8, population_batch: bool = False,
                 population_chunk: int | None = None, start_bias_correction: bool = False,
                 search: Sequence[str] | None = None, num_candidates: int = 256, min_fraction: float = 1e-3,
                 weight_method: str = "minmax"):
        super().__init__(num_candidates, min_fraction, weight_method)
        if fitness not in FITNESS_KINDS:
            raise ValueError(f"esc calibrator: unknown fitness {fitness!r}; valid: {FITNESS_KINDS}")
        self.fitness_kind = fitness
        self.settings = SearchSettings(popsize, sigma0, bound, max_generations, max_evals, timeout_s, tolfun,
                                       fitness_batches, resample, diagonal, seed, checkpoint_dir, resume,
                                       validation_batches, patience).validate()
        if population_batch and fitness not in BATCHED_FITNESS_KINDS:
            raise ValueError(f"esc calibrator: population_batch scores fitness {BATCHED_FITNESS_KINDS} only, "
                             f"not {fitness!r}; set population_batch=false")
        if population_chunk is not None and population_chunk < 1:
            raise ValueError(f"esc calibrator: population_chunk must be >= 1 (or null), got {population_chunk}")
        self.population_batch, self.population_chunk = population_batch, population_chunk
        if local_search and local_evals < 1:
            raise ValueError(f"esc calibrator: local_evals must be >= 1, got {local_evals}")
        self.local_search, self.local_evals, self.local_max_batches = local_search, local_evals, local_max_batches
        self.local_report: dict[str, dict] = {}
        self.start_bias_correction = start_bias_correction
        self.start_bias_report: dict | None = None
        if search is not None and (isinstance(search, str) or not search):
            raise ValueError(f"esc calibrator: search must be a non-empty list of globs over quantizer names (or "
                             f"null: all), got {search!r}")
        self.search = None if search is None else list(search)
        self.fitness: Fitness | None = None
        self._bound: tuple[ModelAdapter, list[dict]] | None = None
        self._state: SearchState | None = None
        self._scales: ScaleVector | None = None

    def bind(self, adapter: ModelAdapter, batches: Sequence[dict]) -> Fitness:
        """Build the configured fitness on the calibration batches (an empty split raises a ValueError)."""
        self.fitness = make_fitness(adapter, batches, self.fitness_kind)
        self._bound = adapter, list(batches)
        return self.fitness

    def calibrate(self, model: nn.Module, forward_loop: ForwardLoop,
                  fitness: Fitness | None = None) -> dict[str, ActivationStats]:
        """Calibrate weights, set the MSE start from one statistics pass, then search scales with CMA-ES."""
        fitness = fitness if fitness is not None else self.fitness
        if fitness is None:
            raise ValueError("esc calibrator: no fitness; call bind(adapter, batches) or pass fitness=")
        self._state = None
        unmatched = unmatched_globs(model, self.search) if self.search is not None else []
        if unmatched:
            raise ValueError(f"esc calibrator: search globs {unmatched} match no enabled activation quantizer "
                             "(`python -m esc.inspect` lists the names)")
        stats = super().calibrate(model, forward_loop)
        if self.local_search:  # the global search then starts from the refined scales
            self.local_report = refine_blocks(model, forward_loop, self.settings, self.local_evals,
                                              self.local_max_batches)
        if self.start_bias_correction:
            self.start_bias_report = self._correct_start_bias(model)
        self._scales = scales = ScaleVector(model, self.search)
        if len(scales) == 0:
            log.warning("esc: no activation quantizer to search; keeping the local start")
            return stats

        def objective(x: np.ndarray, subset: Sequence[int] | None) -> float:
            scales.write(x)
            return fitness(model, subset)

        batched = population_objective(fitness, model, scales, self.population_chunk) if self.population_batch \
            else None
        log.info("esc: searching %d activation scales", len(scales))
        self._state = run_search(objective, len(scales), len(fitness), self.settings, scales.fingerprint(), batched)
        scales.write(self._state.solution)
        log.info("esc: fitness %.6g -> %.6g; validation %s -> %s", self._state.start_f, self._state.best_f,
                 self._state.val_start_f, self._state.val_best_f)
        return stats

    def _correct_start_bias(self, model: nn.Module) -> dict:
        """Guarded bias correction of the local start on the batches the fitness minimises (validation batches,
        which only judge candidates, stay unseen); returns the stage's report."""
        if self._bound is None or self._bound[0].model is not model:
            raise ValueError("esc calibrator: start_bias_correction needs bind(adapter, batches) for this model")
        adapter, batches = self._bound
        fitness_batches = batches[: len(batches) - self.settings.validation_batches]
        report = BiasCorrection(guard=True).after_calibration(adapter, fitness_batches)
        log.info("esc: start bias correction kept %d of %d layers; calibration KL %.6g -> %.6g",
                 sum(r["kept"] for r in report["layers"].values()), len(report["layers"]), report["kl_before"],
                 report["kl_after"])
        return report

    @property
    def searched_scales(self) -> list[str]:
        """The names of the quantizers whose scales the last global step searched."""
        return self._scales.names if self._scales is not None else []

    @property
    def history(self) -> list[dict]:
        return self._state.history if self._state else []

    @property
    def start_fitness(self) -> float | None:
        return self._state.start_f if self._state else None

    @property
    def best_fitness(self) -> float | None:
        return self._state.best_f if self._state else None

    @property
    def validation(self) -> tuple[float, float] | None:
        """(local start, chosen solution) fitness on the held-out validation batches; None without them."""
        if self._state is None or self._state.val_start_f is None:
            return None
        return self._state.val_start_f, self._state.val_best_f

    @property
    def best_log_multipliers(self) -> np.ndarray | None:
        """The log-multipliers written to the model (best on validation when validation batches are held out)."""
        return self._state.solution if self._state else None

    @property
    def snapshots(self) -> list[np.ndarray]:
        """The solution after each generation (index g-1 for generation g), e.g. for budget curves."""
        return self._state.snapshots if self._state else []

    @contextmanager
    def scales_written(self, log_multipliers: np.ndarray) -> Iterator[None]:
        """Hold other log-multipliers of the local start in the model, then restore the chosen solution."""
        if self._state is None:
            raise ValueError("esc calibrator: no search has run")
        self._scales.write(log_multipliers)
        try:
            yield
        finally:
            self._scales.write(self._state.solution)

    def save_plot(self, path: str | Path) -> Path:
        """Write the convergence plot of the last search (PNG)."""
        return save_convergence_plot(self.history, path, self.start_fitness)

    def reset(self) -> None:
        """Forget statistics and the last search (the bound fitness stays)."""
        super().reset()
        self._state = None
        self._scales = None
        self.local_report = {}
        self.start_bias_report = None
