"""The global step of ESC: CMA-ES (the `cma` package, ask/tell) over log-multipliers of the local scales.

The search knows nothing about models: it minimises `objective(x, subset)`, where `x` holds one log-multiplier
per quantizer (0 is the local start) and `subset` the calibration batches to score on (None: all of them).
The local start is scored first, on all batches, and the result is never worse than it on that full fitness.

Held-out validation: with `validation_batches = k`, the last k calibration batches never enter the fitness the
search minimises. Each generation's best candidate is scored on them; the solution is the candidate (local start
included) with the lowest validation fitness, and `patience` stops the search after that many generations without
a validation improvement. This is what keeps a search on a small calibration set from overfitting its fitness.

Determinism: CMA-ES samples through its `randn` option, given here a picklable object that owns its own
numpy Generator, and the batch resampling has another; both live in the checkpoint, so the same seed gives the
same scales and a resumed run continues exactly where the killed one stopped (no global RNG is touched).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cma
import numpy as np

# Checkpoints pickled before search_state.py existed name these classes in this module; the import keeps them loadable.
from esc.calib.search_state import GaussianSampler, SearchState, _Gaussian, load_state, save_state  # noqa: F401

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "esc_state.pkl"
Objective = Callable[[np.ndarray, Sequence[int] | None], float]
BatchObjective = Callable[[np.ndarray, Sequence[int] | None], list[float]]  # a (P, dim) population at once


@dataclass(frozen=True)
class SearchSettings:
    """Controls of the CMA-ES search (documented in conf/calibrator/esc.yaml)."""

    popsize: int | None = None
    sigma0: float = 0.1
    bound: float = 0.7
    max_generations: int = 50
    max_evals: int | None = None
    timeout_s: float | None = None
    tolfun: float = 1e-8
    fitness_batches: int | None = None
    resample: bool = False
    diagonal: bool = False
    seed: int = 0
    checkpoint_dir: str | None = None
    resume: bool = False
    validation_batches: int = 0
    patience: int | None = None

    def validate(self) -> "SearchSettings":
        """Return self, or raise a ValueError naming the first setting out of range."""
        checks = [
            (self.popsize is None or self.popsize >= 2, f"popsize must be >= 2 (or null), got {self.popsize}"),
            (self.sigma0 > 0, f"sigma0 must be > 0, got {self.sigma0}"),
            (self.bound > 0, f"bound must be > 0, got {self.bound}"),
            (self.max_generations >= 1, f"max_generations must be >= 1, got {self.max_generations}"),
            (self.max_evals is None or self.max_evals >= 1, f"max_evals must be >= 1 (or null), got {self.max_evals}"),
            (self.timeout_s is None or self.timeout_s > 0, f"timeout_s must be > 0 (or null), got {self.timeout_s}"),
            (self.tolfun >= 0, f"tolfun must be >= 0, got {self.tolfun}"),
            (self.fitness_batches is None or self.fitness_batches >= 1,
             f"fitness_batches must be >= 1 (or null for all), got {self.fitness_batches}"),
            (not self.resume or self.checkpoint_dir, "resume needs checkpoint_dir"),
            (self.validation_batches >= 0, f"validation_batches must be >= 0, got {self.validation_batches}"),
            (self.patience is None or self.patience >= 1, f"patience must be >= 1 (or null), got {self.patience}"),
            (self.patience is None or self.validation_batches > 0, "patience needs validation_batches > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"esc calibrator: {message}")
        return self


class _Pools:
    """Which calibration batches the fitness uses (`train`) and which only judge candidates (`validation`)."""

    def __init__(self, n_batches: int, settings: SearchSettings):
        k = settings.validation_batches
        if k >= n_batches:
            raise ValueError(f"esc calibrator: validation_batches={k} leaves no fitness batch out of {n_batches} "
                             "calibration batches; lower it or add calibration data")
        self.n_train = n_batches - k
        # None means "all batches" to the objective; with validation, "all" is the first n_train only
        self.train = None if k == 0 else list(range(self.n_train))
        self.validation = list(range(self.n_train, n_batches)) if k else None


def _new_state(objective: Objective, dim: int, settings: SearchSettings, fingerprint: np.ndarray,
               pools: _Pools) -> SearchState:
    cma_seed, subset_seed = np.random.SeedSequence(settings.seed).spawn(2)
    options = {"bounds": [-settings.bound, settings.bound], "seed": np.nan, "randn": GaussianSampler(cma_seed),
               "tolfun": settings.tolfun, "CMA_diagonal": settings.diagonal, "verbose": -9, "verb_log": 0}
    if settings.popsize is not None:
        options["popsize"] = settings.popsize
    es = cma.CMAEvolutionStrategy(np.zeros(dim), settings.sigma0, options)
    start_f = objective(np.zeros(dim), pools.train)
    state = SearchState(fingerprint, es, np.random.default_rng(subset_seed), start_f, np.zeros(dim), start_f)
    if pools.validation is not None:
        state.val_start_f = state.val_best_f = objective(np.zeros(dim), pools.validation)
        state.val_best_x = np.zeros(dim)
        state.evaluations += 1
    return state


def _uses_subsets(settings: SearchSettings, n_batches: int) -> bool:
    return settings.fitness_batches is not None and settings.fitness_batches < n_batches


def _subset(state: SearchState, settings: SearchSettings, pools: _Pools) -> list[int] | None:
    """The batches of the next generation: all training batches, the first k (fixed), or k drawn afresh."""
    if not _uses_subsets(settings, pools.n_train):
        return pools.train
    k = settings.fitness_batches
    if settings.resample:
        return sorted(state.subset_rng.choice(pools.n_train, size=k, replace=False).tolist())
    return list(range(k))


def _validate(state: SearchState, objective: Objective, x: np.ndarray, pools: _Pools) -> float | None:
    """Score `x` on the validation batches and keep it if it is the best there so far (None: no validation)."""
    if pools.validation is None:
        return None
    f = objective(x, pools.validation)
    state.evaluations += 1
    if f < state.val_best_f:
        state.val_best_x, state.val_best_f, state.stale = np.asarray(x), f, 0
    else:
        state.stale += 1
    return f


def _stop_reason(state: SearchState, settings: SearchSettings, started: float) -> str | None:
    if state.generation >= settings.max_generations:
        return "max_generations"
    if settings.max_evals is not None and state.evaluations + state.es.popsize > settings.max_evals:
        return "max_evals"
    if settings.timeout_s is not None and time.perf_counter() - started >= settings.timeout_s:
        return "timeout_s"
    if settings.patience is not None and state.stale >= settings.patience:
        return "patience"
    state.es.opts["tolfun"] = settings.tolfun  # a resumed run may change it; cma reads its options on stop()
    return ",".join(state.es.stop()) or None


def run_search(objective: Objective, dim: int, n_batches: int, settings: SearchSettings,
               fingerprint: np.ndarray, batch_objective: BatchObjective | None = None) -> SearchState:
    """Run (or resume) the search; return the final state, whose `best_x` is the chosen solution.

    Stops at max_generations, before a generation that would exceed max_evals, after timeout_s (per call,
    checked between generations) or on CMA-ES's own criteria (tolfun, ...). Finally the CMA-ES mean and,
    when generations scored a subset of batches, the latest generation's best are scored on all batches and
    replace the start only if better. `batch_objective`, when given, scores each generation's candidates
    in one call (equal values, e.g. one batched forward); the start, validation and finalists use `objective`.
    A resumed search keeps the checkpoint's CMA-ES parameters (popsize,
    step size, bounds, diagonal) and takes its stopping rules and batch choice from `settings`.
    """
    pools = _Pools(n_batches, settings)
    path = Path(settings.checkpoint_dir) / CHECKPOINT_NAME if settings.checkpoint_dir else None
    if settings.resume and path.exists():
        state = load_state(path, fingerprint)
        log.info("esc: resuming from %s at generation %d", path, state.generation)
    else:
        state = _new_state(objective, dim, settings, fingerprint, pools)
        log.info("esc: %d scales, local start fitness %.6g", dim, state.start_f)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    while (reason := _stop_reason(state, settings, started)) is None:
        subset = _subset(state, settings, pools)
        tic = time.perf_counter()
        candidates = state.es.ask()
        if batch_objective is not None:
            values = list(batch_objective(np.asarray(candidates), subset))
        else:
            values = [objective(x, subset) for x in candidates]
        state.es.tell(candidates, values)
        rate = len(values) / (time.perf_counter() - tic)
        state.generation += 1
        state.evaluations += len(values)
        state.last_best_x = np.array(candidates[int(np.argmin(values))])
        if subset == pools.train and min(values) < state.best_f:
            state.best_x, state.best_f = state.last_best_x, min(values)
        validation = _validate(state, objective, state.last_best_x, pools)
        state.snapshots.append(state.solution.copy())
        entry = {"generation": state.generation, "best": float(min(values)), "mean": float(np.mean(values)),
                 "spread": float(np.std(values)), "incumbent": state.best_f, "sigma": float(state.es.sigma),
                 "evaluations": state.evaluations, "evals_per_s": rate}
        if validation is not None:
            entry.update(validation=validation, validation_best=state.val_best_f)
        state.history.append(entry)
        log.info("esc gen %(generation)d: best %(best).6g mean %(mean).6g spread %(spread).3g "
                 "incumbent %(incumbent).6g sigma %(sigma).3g, %(evals_per_s).2f evals/s", entry)
        if path is not None:
            save_state(path, state)
    log.info("esc: stopped (%s) after %d generations", reason, state.generation)
    finalists = [state.es.result.xfavorite] + ([state.last_best_x] if _uses_subsets(settings, pools.n_train) else [])
    for x in finalists:
        f = objective(np.asarray(x), pools.train)
        if f < state.best_f:
            state.best_x, state.best_f = np.asarray(x), f
        _validate(state, objective, np.asarray(x), pools)
    if state.snapshots:  # the last generation's entry holds what is finally written, finalists included
        state.snapshots[-1] = state.solution.copy()
    return state
