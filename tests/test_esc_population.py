"""Scoring a whole ESC population in one batched forward: the same values as one candidate at a time,
chunking changes nothing, and the quantizers come back exactly as they were."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from esc.calib.scale_vector import ScaleVector
from esc.calib.fitness import make_fitness
from esc.calib.mse import MSECalibrator
from esc.calib.population import population_objective, population_scales, score_population, tile
from esc.quant.model import quantize_model
from esc.quant.placement import Placement
from run_helpers import seeded_model

CONF = Path(__file__).resolve().parents[1] / "conf"
# Asymmetric Linear/Conv inputs: signed activations give non-zero zero points (softmax probabilities,
# asymmetric in w8a8 too, start at 0 and keep a zero point of 0).
ASYMMETRIC_INPUTS = {"match": "*.input_quantizer", "symmetric": False}
LOG2_PROBS = {"match": "*.probs_quantizer", "grid": "log2"}  # per-candidate scales on the log2 grid too
# Per-token (dynamic) asymmetric inputs: their clip ratios are searched, one per candidate too.
# The first convolution's one-channel input (AST, wav2vec2) stays per tensor: per token it would be lossless.
TOKEN_INPUTS = [{"match": "*.input_quantizer", "granularity": "token", "symmetric": False, "clip_ratio": 0.9},
                *({"match": f"*{layer}.input_quantizer", "granularity": "tensor", "clip_ratio": 1.0, "optional": True}
                  for layer in ("patch_embeddings.projection", "conv_layers.0.conv"))]
# Token groups of 12 features: the tiny models' 32 channels make two whole groups and one padded one.
TOKEN_GROUP_INPUTS = [{**TOKEN_INPUTS[0], "granularity": "group", "group_size": 12}, *TOKEN_INPUTS[1:]]
PRESETS = {"w8a8_asym": (8, [ASYMMETRIC_INPUTS]), "w4a4": (4, []), "w4a4_log2": (4, [LOG2_PROBS]),
           "w4a4_token": (4, TOKEN_INPUTS), "w4a4_token_group": (4, TOKEN_GROUP_INPUTS)}
RTOL = 1e-5  # a larger batch may sum matmuls in another order; on CPU the values came out identical


def calibrated(model_name: str, preset: str = "w8a8_asym", kind: str = "kl"):
    """A tiny model quantized with `preset` and MSE-calibrated, its fitness on two batches and its scales.

    Clips of unequal length, so CTC batches carry padding in their attention mask and Whisper labels -100."""
    adapter = seeded_model(model_name)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(2):
        audios = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 6000)]
        targets = adapter.labels[:2] if adapter.task == "classification" else ["yes no", "up down left"]
        batches.append(adapter.collate(audios, targets))
    bits, rules = PRESETS[preset]
    quant = OmegaConf.to_container(OmegaConf.load(CONF / "quant" / "w8a8.yaml"))
    quant["weight"]["bits"] = quant["activation"]["bits"] = bits
    quant["rules"] += rules
    quantize_model(adapter.model, Placement.from_config(quant))
    MSECalibrator().calibrate(adapter.model, lambda model: [adapter.forward(b) for b in batches])
    return adapter, make_fitness(adapter, batches, kind), ScaleVector(adapter.model)


def candidates(scales: ScaleVector, count: int = 4) -> np.ndarray:
    """`count` log-multiplier vectors, the first the local start (all zeros)."""
    x = np.random.default_rng(1).normal(0.0, 0.3, (count, len(scales)))
    x[0] = 0.0
    return x


def sequential(fitness, scales, x: np.ndarray, subset=None) -> list[float]:
    """One candidate at a time, as the search scores without batching; the start scales written back after."""
    values = []
    for row in x:
        scales.write(row)
        values.append(fitness(fitness.adapter.model, subset))
    scales.write(np.zeros(len(scales)))
    return values


def snapshot(adapter, scales, batch) -> tuple:
    return ([q.scale for q in scales.quantizers], [q.scale.clone() for q in scales.quantizers],
            [q.zero_point.clone() for q in scales.quantizers], adapter.forward(batch))


def assert_restored(adapter, scales, batch, before) -> None:
    tensors, values, zero_points, output = before
    assert all(q.scale is t for q, t in zip(scales.quantizers, tensors))
    assert all(torch.equal(q.scale, v) for q, v in zip(scales.quantizers, values))
    assert all(torch.equal(q.zero_point, z) for q, z in zip(scales.quantizers, zero_points))
    assert all(q.population is None for q in scales.quantizers)
    assert torch.equal(adapter.forward(batch), output)


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("model_name", ["ast_tiny", "wav2vec2_ctc_tiny", "whisper_tiny"])
def test_batched_scores_equal_sequential_scores(model_name, preset):
    adapter, fitness, scales = calibrated(model_name, preset)
    if preset == "w8a8_asym":  # the zero points must reach the batched path, not zeros
        assert sum(int(q.zero_point) != 0 for q in scales.quantizers) >= 5
    if preset.startswith("w4a4_token"):  # the clip ratios are searched beside the static attention scales
        assert sum(q.is_dynamic for q in scales.quantizers) >= 5
    x = candidates(scales)
    objective = population_objective(fitness, adapter.model, scales)
    expected = sequential(fitness, scales, x)
    assert np.ptp(expected) > 100 * RTOL * max(expected)  # candidates differ far beyond the tolerance
    np.testing.assert_allclose(objective(x, None), expected, rtol=RTOL)
    np.testing.assert_allclose(objective(x, [1]), sequential(fitness, scales, x, [1]), rtol=RTOL)


def test_chunks_give_the_same_values():
    adapter, fitness, scales = calibrated("ast_tiny", "w4a4")
    x = candidates(scales, 5)
    whole = score_population(fitness, adapter.model, scales, x)
    for chunk in (1, 2, 3, 5, 8):
        np.testing.assert_allclose(score_population(fitness, adapter.model, scales, x, chunk=chunk), whole, rtol=RTOL)
    np.testing.assert_allclose(whole, sequential(fitness, scales, x), rtol=RTOL)


@pytest.mark.parametrize("model_name", ["ast_tiny", "whisper_tiny"])
def test_quantizers_restored_after_scoring_and_after_an_exception(model_name):
    adapter, fitness, scales = calibrated(model_name)
    batch = fitness.batches[0]
    before = snapshot(adapter, scales, batch)
    x = candidates(scales, 3)
    score_population(fitness, adapter.model, scales, x, chunk=2)
    assert_restored(adapter, scales, batch, before)

    with pytest.raises(RuntimeError, match="tiled"), population_scales(scales, x):
        assert all(q.population is not None for q in scales.quantizers)
        adapter.forward(batch)  # 2 rows cannot be 3 candidates' batches
    assert_restored(adapter, scales, batch, before)


def test_tile_is_candidate_major_over_every_tensor():
    batch = {"input_values": torch.arange(6.0).reshape(2, 3), "attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]]),
             "note": "kept"}
    tiled = tile(batch, 3)
    assert torch.equal(tiled["input_values"][4:], batch["input_values"])
    assert torch.equal(tiled["attention_mask"], batch["attention_mask"].repeat(3, 1))
    assert tiled["note"] == "kept"


def test_task_loss_copies_and_bad_shapes_are_rejected():
    adapter, fitness, scales = calibrated("ast_tiny", kind="task_loss")
    with pytest.raises(ValueError, match="task_loss"):
        population_objective(fitness, adapter.model, scales)
    adapter, fitness, scales = calibrated("ast_tiny")
    with pytest.raises(ValueError, match="another model"):
        population_objective(fitness, adapter.model, ScaleVector(copy.deepcopy(adapter.model)))
    with pytest.raises(ValueError, match="chunk"):
        population_objective(fitness, adapter.model, scales, chunk=0)
    with pytest.raises(ValueError, match=r"\(P, 22\)"):
        score_population(fitness, adapter.model, scales, np.zeros((2, 3)))
