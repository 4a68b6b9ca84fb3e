"""Per-token (dynamic) quantizers' clip ratio: validated, applied per token, saved with the scales, chosen by MSE
on calibration tokens, kept by the other calibrators, searched by ESC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from esc.calib.esc import ESCCalibrator
from esc.calib.minmax import MinMaxCalibrator
from esc.calib.mse import MSECalibrator
from esc.calib.scale_vector import ScaleVector
from esc.calib.stats import NonFiniteActivationError, TokenClipStats
from esc.quant.model import census, load_scales, quantize_model, quantizers, save_scales
from esc.quant.placement import Placement
from esc.quant.quantizer import Quantizer
from esc.quant.spec import QuantSpec
from run_helpers import seeded_model

CONF = Path(__file__).resolve().parents[1] / "conf"


def token(clip_ratio: float = 1.0, symmetric: bool = False) -> Quantizer:
    return Quantizer("fc1.input_quantizer", "activation", QuantSpec(4, symmetric, "token", clip_ratio=clip_ratio),
                     axis=-1)


@pytest.mark.parametrize(("spec", "message"), [
    (QuantSpec(4, False, "token", clip_ratio=0.0), "clip_ratio must be in"),
    (QuantSpec(4, False, "token", clip_ratio=1.5), "clip_ratio must be in"),
    (QuantSpec(4, True, "tensor", clip_ratio=0.9), "clip_ratio is for per-token"),
])
def test_bad_clip_ratio_is_refused_naming_the_quantizer(spec, message):
    with pytest.raises(ValueError, match=f"'fc1.input_quantizer'.*{message}"):
        Quantizer("fc1.input_quantizer", "activation", spec)


def test_a_dynamic_quantizer_has_no_static_range_to_set():
    with pytest.raises(ValueError, match="'fc1.input_quantizer' is per-token"):
        token().set_range(-1.0, 1.0)


def test_clipping_trades_the_loudest_values_for_a_finer_grid():
    # Gaussian tokens of 384 features (as after a Hadamard rotation): each token's max is about 3 sigma, beyond the
    # 4-bit optimum, so a ratio of 0.8 lowers the error; clipping half the range costs more than it saves.
    x = torch.randn(64, 384, generator=torch.Generator().manual_seed(0))
    errors = {r: (token(r, symmetric=True)(x) - x).pow(2).mean().item() for r in (1.0, 0.8, 0.5)}
    assert errors[0.8] < 0.8 * errors[1.0]
    assert errors[0.5] > 1.5 * errors[1.0]
    clipped = token(0.5, symmetric=True)(x)
    # half of each token's range: the signed grid reaches 8/7 of it on the negative side
    assert (clipped.abs().amax(dim=1) <= 0.5 * 8 / 7 * x.abs().amax(dim=1) + 1e-6).all()


def test_population_ratios_reach_each_candidates_rows():
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    q = token()
    q.population = (torch.tensor([[1.0], [0.5], [0.25]]), torch.zeros(3, 1, dtype=torch.int32))
    out = q(torch.cat([x] * 3))
    q.population = None
    for i, ratio in enumerate((1.0, 0.5, 0.25)):
        with torch.no_grad():
            q.scale.fill_(ratio)
        torch.testing.assert_close(out[2 * i:2 * i + 2], q(x))
    q.population = (torch.ones(4, 1), torch.zeros(4, 1, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="not 4 candidates"):
        q(torch.cat([x] * 3))


def tiny_per_token(model_name: str, clip_ratio: float):
    """A tiny model with every Linear/Conv input per token, asymmetric, 4 bits (attention inputs and AST's patch
    embedding input static), and three calibration batches of two random half-second clips."""
    adapter = seeded_model(model_name)
    quant = OmegaConf.to_container(OmegaConf.load(CONF / "quant" / "w8a8.yaml"))
    quant["activation"]["bits"] = 4
    quant["rules"].append({"match": "*.input_quantizer", "granularity": "token", "symmetric": False,
                           "clip_ratio": clip_ratio})
    # AST's one-channel spectrogram into the patch embedding: per token it would not be quantized at all
    quant["rules"].append({"match": "*patch_embeddings.projection.input_quantizer", "granularity": "tensor",
                           "clip_ratio": 1.0, "optional": True})
    quantize_model(adapter.model, Placement.from_config(quant))
    rng = np.random.default_rng(0)
    targets = adapter.labels[:2] if adapter.task == "classification" else ["yes no", "up down"]
    batches = [adapter.collate([(0.1 * rng.standard_normal(8000)).astype(np.float32) for _ in range(2)], targets)
               for _ in range(3)]
    return adapter, batches


def test_rules_set_the_ratio_and_scales_files_carry_it(tmp_path):
    adapter, batches = tiny_per_token("whisper_tiny", 0.9)
    dynamic = [q for q in quantizers(adapter.model, "activation") if q.is_dynamic]
    assert dynamic and all(q.scale.item() == pytest.approx(0.9) for q in dynamic)
    assert "dynamic clip=0.9" in census(adapter.model)
    with torch.no_grad():
        dynamic[0].scale.fill_(0.42)
    save_scales(adapter.model, tmp_path / "scales.pt")
    other, _ = tiny_per_token("whisper_tiny", 0.9)
    load_scales(other.model, tmp_path / "scales.pt")
    loaded = {q.name: q.scale.item() for q in quantizers(other.model, "activation") if q.is_dynamic}
    assert loaded[dynamic[0].name] == pytest.approx(0.42)


def test_token_statistics_find_the_ratio_of_least_error():
    x = torch.randn(3, 1000, 384, generator=torch.Generator().manual_seed(0))  # 3000 tokens: subsampled to 2048
    stats = TokenClipStats(token(symmetric=True))
    for batch in x:
        stats.update(batch)
    best = stats.best_ratio()
    assert stats.count == 3000 and 0.6 < best < 0.95  # Gaussian tokens: the 4-bit optimum clips their extremes

    def error(ratio):
        return (token(ratio, symmetric=True)(x) - x).pow(2).mean().item()

    assert error(best) < 0.85 * error(1.0) and error(best) < error(0.4)
    with pytest.raises(NonFiniteActivationError, match="'fc1.input_quantizer'"):
        stats.update(torch.full((2, 384), float("nan")))


def test_mse_chooses_the_clip_ratios_minmax_keeps_them_and_esc_searches_them():
    def dynamic(adapter):
        return [q for q in quantizers(adapter.model, "activation") if q.is_dynamic]

    adapter, batches = tiny_per_token("ast_tiny", 0.9)
    MinMaxCalibrator().calibrate(adapter.model, lambda model: [adapter.forward(b) for b in batches])
    assert all(q.scale.item() == pytest.approx(0.9) for q in dynamic(adapter))

    adapter, batches = tiny_per_token("ast_tiny", 1.0)
    loop = lambda model: [adapter.forward(b) for b in batches]  # noqa: E731
    mse = MSECalibrator()
    mse.calibrate(adapter.model, loop)
    chosen = {q.name: q.scale.item() for q in dynamic(adapter)}
    assert chosen == {name: pytest.approx(mse.stats[name].best_ratio()) for name in chosen}
    assert min(chosen.values()) < 1.0
    scales = ScaleVector(adapter.model)
    assert sum(q.is_dynamic for q in scales.quantizers) >= 5 and not all(q.is_dynamic for q in scales.quantizers)

    esc = ESCCalibrator(popsize=8, max_generations=3, sigma0=0.2)
    esc.bind(adapter, batches)
    esc.calibrate(adapter.model, loop)
    assert esc.best_fitness < esc.start_fitness  # the fitness moved, so a new solution was written
    ratios = {q.name: q.scale.item() for q in dynamic(adapter)}
    assert ratios != chosen and all(abs(np.log(ratios[n] / chosen[n])) <= 0.7 + 1e-6 for n in chosen)
