"""Score a whole CMA-ES population of scale candidates in one batched forward per calibration batch.

Each calibration batch is tiled P times along its batch dimension, candidate-major (`torch.cat([t] * P)`
for every tensor, attention masks, decoder inputs and labels alike), and every searched quantizer holds one
scale per candidate (`Quantizer.population`), so the rows of candidate i meet only candidate i's scales.
One forward of a P-times larger batch replaces P forwards. On CPU (one thread, P = 8) that paid where
per-forward overhead dominates: about 4.7x on the tiny AST, 2x on the tiny Whisper, 1.7x on the real Whisper
tiny.en (prototype, forward only); but the tiny wav2vec2 got about 2.8x slower, its 800-frame attention maps
tiled P times apparently falling out of cache (experiments/bench_esc.py). Hence an option, with `chunk` to bound
the tiled batch.

Only the `kl` fitness is batched: an adapter's task loss reduces over the whole (tiled) batch, and the
reduction differs per family (mean, CTC sum, token mean), so it cannot be split into one loss per candidate
without asking the family.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from esc.calib.cma_search import BatchObjective
from esc.calib.fitness import Fitness
from esc.calib.scale_vector import ScaleVector
from esc.quant.model import quantizers

BATCHED_FITNESS_KINDS = ("kl",)


def tile(batch: dict, copies: int) -> dict:
    """The batch repeated `copies` times along dimension 0, candidate-major; non-tensors pass through."""
    return {k: torch.cat([v] * copies) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@contextmanager
def population_scales(scales: ScaleVector, candidates: np.ndarray) -> Iterator[None]:
    """Within the block, every quantizer of `scales` holds one scale per row of `candidates` (P, dim).

    Candidate i's scale is start * exp(candidates[i]), rounded as `ScaleVector.write` rounds it, with the
    quantizer's own zero point, integer range and inference path; inputs must be batches made by
    `tile(batch, P)`. The scale buffers are never written, so leaving the block (on an exception too)
    gives back the quantizers exactly as they were.
    """
    candidates = np.asarray(candidates, dtype=np.float64)
    if candidates.ndim != 2 or candidates.shape[1] != len(scales):
        raise ValueError(f"ESC population: candidates must be (P, {len(scales)}), got {candidates.shape}")
    count = candidates.shape[0]
    starts = torch.stack(scales.start)
    # float32 multipliers: `write` multiplies a float32 scale by a Python float, which torch rounds the same way.
    # One (dim, P, 1) product unbound into views: per-quantizer tensor ops cost more than a small forward.
    per_candidate = (starts * torch.from_numpy(np.exp(candidates)).float().to(starts.device)).T.unsqueeze(-1)
    zero_points = torch.stack([q.zero_point for q in scales.quantizers]).reshape(-1, 1, 1).expand(-1, count, 1)
    previous = [q.population for q in scales.quantizers]
    try:
        for q, scale, zero_point in zip(scales.quantizers, per_candidate.unbind(), zero_points.unbind()):
            q.population = (scale, zero_point)
        yield
    finally:
        for q, population in zip(scales.quantizers, previous):
            q.population = population


def _check(fitness: Fitness, model: nn.Module, scales: ScaleVector, chunk: int | None) -> None:
    if fitness.kind not in BATCHED_FITNESS_KINDS:
        raise ValueError(f"ESC population scoring supports the fitness {BATCHED_FITNESS_KINDS}, not "
                         f"{fitness.kind!r}: a task loss reduces over the tiled batch, so score it one candidate "
                         "at a time (population_batch: false)")
    if chunk is not None and chunk < 1:
        raise ValueError(f"ESC population: chunk must be >= 1 (or None for all), got {chunk}")
    if model is not fitness.adapter.model:
        raise ValueError("ESC population: the model scored must be the fitness adapter's model")
    # scales of a copy would leave the scored model's quantizers at their own scales, silently
    if not {id(q) for q in scales.quantizers} <= {id(q) for q in quantizers(model)}:
        raise ValueError("ESC population: the scales belong to another model (a copy?)")


def score_population(fitness: Fitness, model: nn.Module, scales: ScaleVector, candidates: np.ndarray,
                     subset: Sequence[int] | None = None, chunk: int | None = None) -> list[float]:
    """`fitness(model, subset)` of every row of `candidates` (P log-multiplier vectors), batched.

    Equal, to float tolerance, to `scales.write(x); fitness(model, subset)` for each row x in turn (a larger
    batch may sum matmuls in another order), but the model's scales are left as they were. Each forward
    carries `chunk` candidates (None: all P), which bounds memory to chunk times one batch's activations.
    Raises a ValueError for a fitness other than kl (see the module docstring).
    """
    _check(fitness, model, scales, chunk)
    return _score(fitness, scales, candidates, subset, chunk)


@torch.no_grad()
def _score(fitness: Fitness, scales: ScaleVector, candidates: np.ndarray, subset: Sequence[int] | None,
           chunk: int | None) -> list[float]:
    candidates = np.asarray(candidates, dtype=np.float64)
    indices = range(len(fitness)) if subset is None else subset
    fitness.fp_targets()  # FP targets come from the untiled batches: compute them before any population
    step = chunk or max(1, len(candidates))
    values = []
    for first in range(0, len(candidates), step):
        group = candidates[first:first + step]
        totals, positions = [0.0] * len(group), 0
        with population_scales(scales, group):
            for i in indices:
                logits = fitness.adapter.forward(tile(fitness.batches[i], len(group)))
                for c, candidate_logits in enumerate(logits.unflatten(0, (len(group), -1))):
                    kl, n = fitness.divergence(i, candidate_logits)
                    totals[c] += kl
                positions += n  # the batch's predicted positions, the same for every candidate
        values += [total / positions for total in totals]
    return values


def population_objective(fitness: Fitness, model: nn.Module, scales: ScaleVector,
                         chunk: int | None = None) -> BatchObjective:
    """The objective of a whole generation: `objective(X (P, dim), subset) -> P fitness values`.

    Checks its arguments once, now, so a configuration that cannot be batched fails before the search starts
    (and no generation repeats the check).
    """
    _check(fitness, model, scales, chunk)

    def objective(candidates: np.ndarray, subset: Sequence[int] | None) -> list[float]:
        return _score(fitness, scales, candidates, subset, chunk)

    return objective
