"""Group-wise dynamic activations (`granularity: group` on an activation): one scale per `group_size` consecutive
features of each token, computed from the input, with a clip ratio chosen by MSE and searched by ESC."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from run_helpers import compose_run

from esc.calib.stats import TokenClipStats
from esc.models.registry import build_adapter
from esc.quant.model import census, quantize_model, quantizers
from esc.quant.placement import Placement
from esc.quant.quantizer import Quantizer
from esc.quant.spec import QuantSpec

CONF = Path(__file__).resolve().parents[1] / "conf"


def grouped(group_size: int, clip_ratio: float = 1.0, axis: int = -1) -> Quantizer:
    return Quantizer("fc1.input_quantizer", "activation",
                     QuantSpec(4, False, "group", group_size=group_size, clip_ratio=clip_ratio), axis=axis)


def per_token(clip_ratio: float = 1.0) -> Quantizer:
    return Quantizer("fc1.input_quantizer", "activation", QuantSpec(4, False, "token", clip_ratio=clip_ratio),
                     axis=-1)


def test_each_group_of_each_token_gets_its_own_grid():
    x = torch.randn(2, 5, 96, generator=torch.Generator().manual_seed(0))
    out = grouped(32, clip_ratio=0.9)(x)
    assert grouped(32).is_dynamic and out.shape == x.shape
    # by hand: each 32-feature slice quantized per token with the same ratio
    expected = torch.cat([per_token(0.9)(x[..., i:i + 32]) for i in (0, 32, 64)], dim=-1)
    torch.testing.assert_close(out, expected)


def test_a_last_partial_group_is_quantized_on_its_own_features():
    x = torch.randn(3, 80, generator=torch.Generator().manual_seed(1))  # 64 + 16: the padding must change nothing
    expected = torch.cat([per_token()(x[:, :64]), per_token()(x[:, 64:])], dim=-1)
    torch.testing.assert_close(grouped(64)(x), expected)


def test_the_feature_axis_can_be_the_channels_of_a_convolution_input():
    x = torch.randn(2, 48, 7, generator=torch.Generator().manual_seed(2))  # (batch, channels, time)
    expected = grouped(16)(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(grouped(16, axis=1)(x), expected)


@pytest.mark.parametrize("make", [per_token, lambda: grouped(64)], ids=["token", "group"])
def test_an_input_without_tokens_passes_through_in_its_shape(make):
    empty = torch.empty(2, 0, 80)  # a batch of empty sequences
    assert make()(empty).shape == (2, 0, 80)


def test_groups_cost_less_than_whole_tokens_when_channels_differ_in_scale():
    # a few loud channels set each token's range; groups keep them from coarsening the grid of the quiet ones:
    # the loud group keeps its coarse grid, the other five of six get fine ones (about a sixth of the error)
    x = torch.randn(256, 384, generator=torch.Generator().manual_seed(3))
    x[:, :8] *= 30.0
    errors = {name: (q(x) - x).pow(2).mean().item() for name, q in (("token", per_token()), ("group", grouped(64)))}
    assert errors["group"] < 0.25 * errors["token"]


def test_one_feature_and_groups_of_one_are_refused_naming_the_quantizer():
    with pytest.raises(ValueError, match="'fc1.input_quantizer'.*lossless"):
        grouped(64)(torch.randn(4, 1))
    with pytest.raises(ValueError, match="'fc1.input_quantizer': activation groups of 1 feature"):
        grouped(1)


def test_group_statistics_choose_the_ratio_of_least_error_over_groups():
    x = torch.randn(2, 500, 384, generator=torch.Generator().manual_seed(4))
    stats = TokenClipStats(grouped(64))
    for batch in x:
        stats.update(batch)
    best = stats.best_ratio()
    assert stats.count == 2 * 1500  # rows are token groups: 3000 per input, every second kept (at most 2048)

    def error(ratio):
        return (grouped(64, ratio)(x) - x).pow(2).mean().item()

    assert error(best) <= min(error(1.0), error(0.6)) and best < 1.0


def test_the_tokengroup_preset_places_grouped_inputs_and_keeps_the_static_ones():
    model = build_adapter(OmegaConf.to_container(OmegaConf.load(CONF / "model" / "whisper_tiny.yaml"))).model
    quant = OmegaConf.to_container(compose_run("quant=w4a4_g64_tokengroup").quant, resolve=True)
    quantize_model(model, Placement.from_config(quant))
    activations = list(quantizers(model, "activation"))
    inputs = [q for q in activations if q.name.endswith(".input_quantizer")]
    assert inputs and all(q.is_dynamic and q.dynamic_group_size == 64 and q.bits == 4 for q in inputs)
    assert all(not q.is_dynamic for q in activations if q not in inputs)  # attention inputs: static per tensor
    assert "activation 4b asym per-group64 dynamic clip=1" in census(model)
