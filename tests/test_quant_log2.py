"""The log2 grid for softmax probabilities: levels, rounding, validation, calibration, and why it exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from esc.calib.registry import make_calibrator
from esc.quant.model import census, quantize_model, quantizers
from esc.quant.placement import Placement
from esc.quant.quantizer import Quantizer
from esc.quant.spec import QuantSpec
from run_helpers import seeded_model

CONF = Path(__file__).resolve().parents[1] / "conf"
LOG2_PROBS = {"match": "*.probs_quantizer", "grid": "log2"}


def log2_quantizer(bits=4, scale=1.0):
    q = Quantizer("attn.probs_quantizer", "activation", QuantSpec(bits, symmetric=False, grid="log2"))
    q.set_range(0.0, scale)
    return q


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_levels_are_powers_of_two_below_the_scale_and_zero(bits):
    q = log2_quantizer(bits, scale=0.8)
    x = torch.rand(20_000, generator=torch.Generator().manual_seed(0)) ** 8  # many tiny values, as softmax gives
    out = q(x)
    nonzero = out[out > 0]
    exponents = torch.log2(0.8 / nonzero)
    torch.testing.assert_close(exponents, exponents.round(), atol=1e-5, rtol=0)
    assert exponents.min() >= 0 and exponents.max() <= 2**bits - 2
    assert out.unique().numel() <= 2**bits


def test_rounding_is_on_the_exponent_with_zero_below_the_deepest_level():
    q = log2_quantizer(4, scale=2.0)
    x = 2.0 * torch.tensor([2**-3.4, 2**-3.6, 2**-14.4, 2**-14.6, 1.0, 3.0, 0.0, -0.5, 0.7])
    expected = 2.0 * torch.tensor([2**-3, 2**-4, 2**-14, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5])
    torch.testing.assert_close(q(x), expected)
    assert q.clip_range()[0].item() == 0.0 and q.clip_range()[1].item() == 2.0


def test_attention_over_many_keys_keeps_its_mass_where_a_uniform_grid_loses_it():
    # 1500 keys, as Whisper's encoder: most probabilities are near 1/1500, far below a 4-bit uniform step
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(64, 1500, generator=g), dim=-1)
    values = torch.randn(1500, 16, generator=g)
    top = probs.max().item()
    uniform = Quantizer("attn.probs_quantizer", "activation", QuantSpec(4, symmetric=False))
    uniform.set_range(0.0, top)
    log2 = log2_quantizer(4, top)
    assert (uniform(probs) == 0).float().mean() > 0.8  # the uniform grid zeroes most probabilities...
    assert uniform(probs).sum(-1).mean() < 0.7  # ...and with them a third of every row's mass
    torch.testing.assert_close(log2(probs).sum(-1), torch.ones(64), atol=0.05, rtol=0)
    exact = probs @ values
    err_uniform = ((uniform(probs) @ values - exact).norm() / exact.norm()).item()
    err_log2 = ((log2(probs) @ values - exact).norm() / exact.norm()).item()
    assert err_log2 < 0.5 * err_uniform, (err_log2, err_uniform)


def test_gradient_passes_straight_through():
    x = torch.rand(50, requires_grad=True)
    log2_quantizer()(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(50))


@pytest.mark.parametrize("kind, spec", [
    ("activation", QuantSpec(4, symmetric=True, grid="log2")),
    ("activation", QuantSpec(4, symmetric=False, granularity="token", grid="log2")),
    ("weight", QuantSpec(4, symmetric=False, grid="log2")),
    ("activation", QuantSpec(4, symmetric=False, grid="cube")),
])
def test_a_log2_grid_where_it_does_not_fit_is_refused_naming_the_quantizer(kind, spec):
    with pytest.raises(ValueError, match="'blk.q'.*grid"):
        Quantizer("blk.q", kind, spec)


def tiny_whisper_with_log2_probs():
    adapter = seeded_model("whisper_tiny")
    quant = OmegaConf.to_container(OmegaConf.load(CONF / "quant" / "w8a8.yaml"))
    quant["activation"]["bits"] = 4
    quantize_model(adapter.model, Placement.from_config(quant, [LOG2_PROBS]))
    rng = np.random.default_rng(0)
    batch = adapter.collate([(0.1 * rng.standard_normal(8000)).astype(np.float32) for _ in range(2)],
                            ["yes no", "up down"])
    return adapter, batch


@pytest.mark.parametrize("name", ["minmax", "percentile", "mse", "entropy"])
def test_every_calibrator_gives_a_log2_quantizer_the_seen_maximum(name):
    adapter, batch = tiny_whisper_with_log2_probs()
    probs = [q for q in quantizers(adapter.model, "activation") if q.name.endswith("probs_quantizer")]
    assert probs and all(q.spec.grid == "log2" for q in probs)
    assert f"{probs[0].name} activation 4b log2 per-tensor uncalibrated" in census(adapter.model)
    assert "4 bit, log2, per-tensor" in repr(probs[0])
    stats = make_calibrator(name).calibrate(adapter.model, lambda model: adapter.forward(batch))
    for q in probs:
        assert q.scale.item() == pytest.approx(stats[q.name].max) and q.zero_point.item() == 0
    uniform_inputs = [q for q in quantizers(adapter.model, "activation") if q.spec.grid == "uniform"]
    assert uniform_inputs and all(q.is_calibrated for q in uniform_inputs)
    with torch.no_grad():
        assert torch.isfinite(adapter.forward(batch)).all()
