"""ESC's block step on tiny random W4A4 models: blocks found, exact FP replay, never worse, deterministic."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers.cache_utils import Cache

import esc.calib.base
from esc.calib.cma_search import SearchSettings
from esc.calib.scale_vector import ScaleVector
from esc.calib.fitness import make_fitness
from esc.calib.local_search import capture_blocks, find_blocks, refine_blocks
from esc.calib.mse import MSECalibrator
from esc.calib.stats import collect_statistics
from esc.quant.model import quantize_model, quantizers, quantizers_off
from esc.quant.placement import Placement
from run_helpers import seeded_model

CONF = Path(__file__).resolve().parents[1] / "conf"
BLOCKS = {
    "ast_tiny": ["audio_spectrogram_transformer.layers.0", "audio_spectrogram_transformer.layers.1"],
    "wav2vec2_ctc_tiny": ["wav2vec2.encoder.layers.0", "wav2vec2.encoder.layers.1"],
    "whisper_tiny": ["model.encoder.layers.0", "model.encoder.layers.1",
                     "model.decoder.layers.0", "model.decoder.layers.1"],
}
SEARCH = SearchSettings(sigma0=0.3, bound=0.7, seed=0)
EVALS = 60  # enough for AST and Whisper blocks to improve on their MSE start at W4A4


@pytest.fixture(autouse=True)
def small_histograms(monkeypatch):
    # 256 bins per sign instead of 2048: the same MSE start code path, a fraction of its time
    monkeypatch.setattr(esc.calib.base, "collect_statistics", functools.partial(collect_statistics, bins=256))


def tiny(model_name: str, n_batches: int = 2, calibrate: bool = True):
    """A tiny W4A4 model (MSE start unless `calibrate` is false), its batches and a counting forward loop."""
    adapter = seeded_model(model_name)
    rng = np.random.default_rng(0)
    targets = adapter.labels[:2] if adapter.task == "classification" else ["yes no", "up down"]
    batches = [adapter.collate([(0.1 * rng.standard_normal(8000)).astype(np.float32) for _ in range(2)], targets)
               for _ in range(n_batches)]
    quant = OmegaConf.to_container(OmegaConf.load(CONF / "quant" / "w8a8.yaml"))
    quant["weight"]["bits"] = quant["activation"]["bits"] = 4
    quantize_model(adapter.model, Placement.from_config(quant))
    calls = []

    def forward_loop(model):
        calls.append(1)
        for batch in batches:
            adapter.forward(batch)

    if calibrate:
        MSECalibrator().calibrate(adapter.model, forward_loop)
    calls.clear()
    return adapter, batches, forward_loop, calls


def static_scales(model) -> dict[str, torch.Tensor]:
    return {q.name: q.scale.clone() for q in quantizers(model, "activation") if not q.is_dynamic and q.is_calibrated}


@pytest.mark.parametrize("model_name", list(BLOCKS))
def test_blocks_are_the_transformer_layers(model_name):
    adapter, _, _, _ = tiny(model_name, calibrate=False)
    assert [name for name, _ in find_blocks(adapter.model)] == BLOCKS[model_name]
    if model_name == "wav2vec2_ctc_tiny":  # conv front-end layers sit in a ModuleList too, without attention
        in_blocks = {q.name for _, block in find_blocks(adapter.model) for q in quantizers(block)}
        assert any(q.name.startswith("wav2vec2.feature_extractor.") for q in quantizers(adapter.model))
        assert not any(name.startswith("wav2vec2.feature_extractor.") for name in in_blocks)


@pytest.mark.parametrize("model_name", list(BLOCKS))
def test_replay_with_quantizers_off_is_the_captured_fp_output(model_name):
    # Uncalibrated quantizers raise when on: the capture pass must run with every one of them off.
    adapter, _, loop, calls = tiny(model_name, calibrate=False)
    enabled = [q.enabled for q in quantizers(adapter.model)]
    caches = capture_blocks(adapter.model, loop)
    assert len(calls) == 1 and [q.enabled for q in quantizers(adapter.model)] == enabled
    assert [c.name for c in caches] == BLOCKS[model_name]
    for cache in caches:
        assert len(cache) == 2
        for args, kwargs in cache.calls:
            assert not any(isinstance(v, Cache) for v in (*args, *kwargs.values()))
        with quantizers_off(adapter.model):
            for _ in range(2):  # a second replay proves the first changed no state (no cache grew)
                for i, fp in enumerate(cache.outputs):
                    assert torch.equal(cache.replay(i), fp), cache.name
            assert cache.error() == 0.0


def test_max_batches_bounds_the_capture():
    adapter, _, loop, _ = tiny("whisper_tiny", n_batches=3, calibrate=False)
    full = capture_blocks(adapter.model, loop, max_batches=None)
    first = capture_blocks(adapter.model, loop, max_batches=1)
    assert [len(c) for c in full] == [3] * 4 and [len(c) for c in first] == [1] * 4
    for a, b in zip(full, first):
        assert torch.equal(a.outputs[0], b.outputs[0])


@pytest.mark.parametrize("model_name, must_improve", [
    ("ast_tiny", True), ("wav2vec2_ctc_tiny", False), ("whisper_tiny", True)])
def test_refinement_never_worse_and_written_to_the_blocks(model_name, must_improve):
    adapter, batches, loop, _ = tiny(model_name)
    fitness = make_fitness(adapter, batches)
    fitness_before, start = fitness(adapter.model), static_scales(adapter.model)
    report = refine_blocks(adapter.model, loop, SEARCH, EVALS)
    fitness_after, refined = fitness(adapter.model), static_scales(adapter.model)
    print(f"\n{model_name}: fitness (kl) {fitness_before:.6g} -> {fitness_after:.6g}; "
          + "; ".join(f"{k} {v['error_before']:.4g} -> {v['error_after']:.4g} "
                      f"({v['evaluations']} evals, {v['seconds']:.2f} s)" for k, v in report.items()))

    assert list(report) == BLOCKS[model_name] and math.isfinite(fitness_after)
    blocks = dict(find_blocks(adapter.model))
    for name, entry in report.items():
        assert entry["scales"] == len(ScaleVector(blocks[name])) > 0
        assert entry["error_after"] <= entry["error_before"]
        assert entry["evaluations"] <= EVALS + 1  # the budget, then one scoring of the CMA-ES mean
    if must_improve:
        assert any(e["error_after"] < e["error_before"] for e in report.values())
    # the written scales are those reported: a fresh capture measures the same block errors
    for cache in capture_blocks(adapter.model, loop):
        assert cache.error() == pytest.approx(report[cache.name]["error_after"], rel=1e-6)
    in_blocks = {q.name for block in blocks.values() for q in ScaleVector(block).quantizers}
    for name, scale in start.items():
        ratio = torch.log(refined[name] / scale).abs().max()
        assert ratio <= SEARCH.bound + 1e-6
        if name not in in_blocks:  # front-ends and heads are left to the global step
            assert torch.equal(refined[name], scale), name
    if must_improve:
        assert any(not torch.equal(refined[n], start[n]) for n in in_blocks)


def test_same_seed_same_scales_other_seed_differs():
    def run(seed: int):
        adapter, _, loop, _ = tiny("ast_tiny")
        report = refine_blocks(adapter.model, loop, SearchSettings(sigma0=0.3, seed=seed), EVALS)
        return static_scales(adapter.model), [(v["error_after"], v["evaluations"]) for v in report.values()]

    (scales, errors), (again, errors_again), (other, _) = run(3), run(3), run(4)
    assert errors == errors_again
    assert all(torch.equal(scales[n], again[n]) for n in scales)
    assert any(not torch.equal(scales[n], other[n]) for n in scales)


def test_a_generation_loop_cannot_be_replayed_and_says_so():
    # Greedy decoding calls each decoder block once per token with the earlier tokens in the cache.
    adapter, batches, _, _ = tiny("whisper_tiny")

    def generation_loop(model):
        adapter.predict(batches[0])

    with pytest.raises(ValueError, match="without past state"):
        refine_blocks(adapter.model, generation_loop, SEARCH, EVALS)


def test_a_budget_below_one_evaluation_is_rejected():
    adapter, _, loop, calls = tiny("ast_tiny")
    with pytest.raises(ValueError, match="evals_per_block"):
        refine_blocks(adapter.model, loop, SEARCH, 0)
    assert not calls
