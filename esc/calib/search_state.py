"""The resumable state of ESC's CMA-ES search and its checkpoint file.

Everything a killed search needs to continue exactly where it stopped lives in one `SearchState`: the strategy
(its sampler, a `GaussianSampler`, owns a private Generator), the batch-resampling Generator, the best candidates so
far and the history. It is pickled whole after every generation.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import cma
import numpy as np


class GaussianSampler:
    """`randn(*shape)` for CMA-ES from a private Generator, so its state pickles with the strategy."""

    def __init__(self, seed: np.random.SeedSequence):
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)


# Checkpoints written before the rename pickled the sampler under this name; keep them resumable.
_Gaussian = GaussianSampler


@dataclass
class SearchState:
    """Everything a resumed search needs; pickled whole into the checkpoint after every generation."""

    fingerprint: np.ndarray  # the local start this search refines; a resume must match it
    es: cma.CMAEvolutionStrategy
    subset_rng: np.random.Generator
    start_f: float
    best_x: np.ndarray  # best candidate scored on all batches (the start until one beats it)
    best_f: float
    last_best_x: np.ndarray | None = None  # best of the latest generation on its own batches
    generation: int = 0
    evaluations: int = 1
    history: list[dict] = field(default_factory=list)
    val_start_f: float | None = None  # validation fitness of the local start (None: no validation batches)
    val_best_x: np.ndarray | None = None  # the candidate with the lowest validation fitness so far
    val_best_f: float | None = None
    stale: int = 0  # generations since the validation fitness last improved
    snapshots: list[np.ndarray] = field(default_factory=list)  # the solution after each generation

    @property
    def solution(self) -> np.ndarray:
        """The scales to use: the best on validation when there is validation, else the best on the fitness."""
        return self.best_x if self.val_best_x is None else self.val_best_x


def load_state(path: Path, fingerprint: np.ndarray) -> SearchState:
    """The state pickled at `path`, or ValueError when it was made for another local start (`fingerprint`)."""
    state = pickle.loads(path.read_bytes())
    if state.fingerprint.shape != fingerprint.shape or not np.array_equal(state.fingerprint, fingerprint):
        raise ValueError(f"{path}: this checkpoint was made for other quantizers or other local scales; "
                         "remove it or set resume=false")
    return state


def save_state(path: Path, state: SearchState) -> None:
    """Pickle `state` to `path` atomically."""
    # Write beside the target and rename: a run killed mid-write leaves the previous checkpoint intact.
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(state))
    os.replace(tmp, path)
