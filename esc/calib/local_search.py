"""ESC's optional block step: refine each transformer block's activation scales on its own reconstruction error.

Between the MSE start and the global search, every block's static activation scales are searched with a small
CMA-ES (`esc.calib.cma_search.run_search`) against the block's output error: the block is replayed on its own
FP inputs, captured once with every quantizer off, with quantization on (weights as they are, candidate
activation scales), and compared to its captured FP output. No full-model forward is needed per candidate,
and since the search scores the start first and never returns worse, no block's error increases.

A block is a child of an `nn.ModuleList` that holds an attention module and a quantizer (Whisper's
`model.encoder.layers.N` and `model.decoder.layers.N`, AST's `audio_spectrogram_transformer.layers.N`,
wav2vec2's `wav2vec2.encoder.layers.N`); quantizers outside every block (conv front-ends, positional
convolutions, heads) are left to the global step. The refined scales are the quantizers' own `scale` buffers,
so the global step's `ScaleVector(model)` simply starts from them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from transformers.cache_utils import Cache

from esc.calib.base import ForwardLoop
from esc.calib.cma_search import SearchSettings, run_search
from esc.calib.scale_vector import ScaleVector
from esc.quant.attention import is_attention_module
from esc.quant.model import quantizers
from esc.quant.reference import fp_reference

log = logging.getLogger(__name__)

REPLAY_TOLERANCE = 1e-6  # relative error a replay with quantizers off may show (GPU kernels need not be exact)


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The transformer blocks of `model` in module order, as (name, module); only the outermost ones.

    The attention test keeps out ModuleLists of convolutions (wav2vec2's feature encoder) and of
    parametrizations, which hold no attention.
    """
    blocks: list[tuple[str, nn.Module]] = []
    for path, module in model.named_modules():
        if not isinstance(module, nn.ModuleList):
            continue
        for index, child in enumerate(module):
            name = f"{path}.{index}" if path else str(index)
            if any(name.startswith(f"{outer}.") for outer, _ in blocks):
                continue
            has_attention = any(is_attention_module(m) for m in child.modules())
            if has_attention and next(quantizers(child), None) is not None:
                blocks.append((name, child))
    return blocks


def _first_tensor(output) -> torch.Tensor:
    """The hidden states a block returns: the output itself, or the first tensor of a tuple / ModelOutput."""
    if isinstance(output, torch.Tensor):
        return output
    items = output.values() if isinstance(output, dict) else output
    return next(item for item in items if isinstance(item, torch.Tensor))


def _without_cache(value):
    # A key/value cache is shared by all blocks and grows with every call: replaying through it would attend
    # to stale keys (and reuse FP cross-attention keys), so the replay recomputes everything instead.
    return None if isinstance(value, Cache) else value


class BlockCache:
    """One block's captured calls (positional and keyword arguments) and FP outputs, and their replay."""

    def __init__(self, name: str, block: nn.Module, max_batches: int | None):
        self.name, self.block, self.max_batches = name, block, max_batches
        self.calls: list[tuple[tuple, dict]] = []
        self.outputs: list[torch.Tensor] = []
        self._recording = False

    def __len__(self) -> int:
        return len(self.outputs)

    def before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Forward pre-hook (with_kwargs): keep the call's arguments, without cache objects."""
        self._recording = self.max_batches is None or len(self.calls) < self.max_batches
        if self._recording:
            kwargs = {k: _without_cache(v) for k, v in kwargs.items()}
            if "use_cache" in kwargs:  # with no cache given, a block told to use one may start its own
                kwargs["use_cache"] = False
            self.calls.append((tuple(_without_cache(a) for a in args), kwargs))

    def after(self, module: nn.Module, args: tuple, output) -> None:
        """Forward hook: keep the FP output of a recorded call."""
        if self._recording:
            self.outputs.append(_first_tensor(output))

    @torch.no_grad()
    def replay(self, index: int) -> torch.Tensor:
        """The block's output on captured call `index`, with quantizers as they are now."""
        args, kwargs = self.calls[index]
        return _first_tensor(self.block(*args, **kwargs))

    @torch.no_grad()
    def error(self, subset: Sequence[int] | None = None) -> float:
        """Relative squared error of the replayed outputs, sum (y - y_fp)^2 / sum y_fp^2, over the calls.

        The mean squared error up to a constant factor (the same minimiser), comparable between blocks.
        """
        indices = range(len(self)) if subset is None else subset
        squared_error = reference = 0.0
        for i in indices:
            target = self.outputs[i].float()
            squared_error += float((self.replay(i).float() - target).square().sum())
            reference += float(target.square().sum())
        return squared_error / max(reference, 1e-30)


@torch.no_grad()
def capture_blocks(model: nn.Module, forward_loop: ForwardLoop, max_batches: int | None = 8) -> list[BlockCache]:
    """Run `forward_loop(model)` once with every quantizer off, keeping each block's first `max_batches` calls.

    The loop must call each block once per batch without past state (a teacher-forced task forward, as ESC's
    forward loops are); calls of a generation loop, which depend on earlier steps, cannot be replayed alone.
    """
    caches = [BlockCache(name, block, max_batches) for name, block in find_blocks(model)]
    handles = []
    for cache in caches:
        handles.append(cache.block.register_forward_pre_hook(cache.before, with_kwargs=True))
        handles.append(cache.block.register_forward_hook(cache.after))
    try:
        with fp_reference(model):
            forward_loop(model)
    finally:
        for handle in handles:
            handle.remove()
    return caches


def _check_replay(cache: BlockCache) -> None:
    problem = None
    with fp_reference(cache.block):
        try:
            error = cache.error()
            if error > REPLAY_TOLERANCE:
                problem = f"relative error {error:.3g}"
        except RuntimeError as exc:  # a call made with past state: its mask no longer fits the shapes
            problem = str(exc)
    if problem is not None:
        raise ValueError(f"esc local step: replaying block {cache.name} with quantizers off does not give its "
                         f"captured FP output ({problem}); the forward loop must call each block once per batch "
                         "without past state, as a teacher-forced task forward does")


def _block_settings(settings: SearchSettings, evals_per_block: int, index: int) -> SearchSettings:
    # Each block gets its own stream from the caller's seed (same seed, same scales); the budget bounds the
    # search, not a generation count; no checkpoint, since one search per block would share the file.
    seed = int(np.random.SeedSequence([settings.seed, index]).generate_state(1)[0])
    return SearchSettings(sigma0=settings.sigma0, bound=settings.bound, max_generations=evals_per_block,
                          max_evals=evals_per_block, seed=seed).validate()


def _refine_block(cache: BlockCache, scales: ScaleVector, settings: SearchSettings) -> dict:
    """Search one block's scales, write the best, and report."""
    tic, evaluations = time.perf_counter(), 0
    before = cache.error()
    unit = before if before > 0 else 1.0

    def objective(x: np.ndarray, subset: Sequence[int] | None) -> float:
        # Scored relative to the start (1.0), so the search's absolute `tolfun` means the same for every block:
        # a residual-dominated block output can make the raw error 1e-6 and its differences far smaller.
        nonlocal evaluations
        evaluations += 1
        scales.write(x)
        return cache.error(subset) / unit

    state = run_search(objective, len(scales), len(cache), settings, scales.fingerprint())
    scales.write(state.best_x)
    return {"scales": len(scales), "error_before": before, "error_after": state.best_f * unit,
            "evaluations": evaluations, "seconds": time.perf_counter() - tic}


def refine_blocks(model: nn.Module, forward_loop: ForwardLoop, settings: SearchSettings, evals_per_block: int,
                  max_batches: int | None = 8) -> dict[str, dict]:
    """Refine every block's static activation scales in place against its output reconstruction error.

    `settings` gives the search's `sigma0`, `bound` (log-multipliers of the current scales) and `seed`;
    `evals_per_block` is each block's `max_evals` (the start included; a budget below 1 + the population size
    runs no generation; one final scoring of the CMA-ES mean comes on top). Only the first `max_batches`
    batches of the loop are kept. Returns, per refined block name: `scales` (searched), `error_before` and
    `error_after` (relative squared output error, after <= before), `evaluations` (block replays over all
    kept batches) and `seconds`.
    """
    if evals_per_block < 1:
        raise ValueError(f"esc local step: evals_per_block must be >= 1, got {evals_per_block}")
    report: dict[str, dict] = {}
    for index, cache in enumerate(capture_blocks(model, forward_loop, max_batches)):
        scales = ScaleVector(cache.block)
        if len(scales) == 0 or len(cache) == 0:
            log.info("esc local step: block %s skipped (%d scales, %d calls)", cache.name, len(scales), len(cache))
            continue
        _check_replay(cache)
        entry = _refine_block(cache, scales, _block_settings(settings, evals_per_block, index))
        log.info("esc local step: %s, %d scales, error %.4g -> %.4g in %d evaluations", cache.name, len(scales),
                 entry["error_before"], entry["error_after"], entry["evaluations"])
        report[cache.name] = entry
    return report
