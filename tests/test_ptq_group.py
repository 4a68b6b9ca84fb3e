"""Group-wise weight quantization: grid, calibration (minmax, mse), placement rules, and no recalibration."""

import pytest
import torch
from torch import nn

from esc.calib.weights import calibrate_weights
from esc.quant.model import quantize_model
from esc.quant.placement import Placement, Rule
from esc.quant.quantizer import Quantizer
from esc.quant.spec import QuantSpec


def outlier_layer(spec: QuantSpec) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(128, 16)
    with torch.no_grad():
        layer.weight[:, :4] *= 20  # outlier input columns inflate every per-channel range
    return quantize_model(nn.Sequential(layer), Placement(weight=spec))[0]


def weight_error(layer) -> float:
    return (layer.weight_quantizer(layer.weight.detach()) - layer.weight).pow(2).sum().item()


@pytest.mark.parametrize("method", ["minmax", "mse"])
def test_groups_beat_channels_at_4_bits_on_outlier_columns(method):
    errors = {}
    for granularity in ("channel", "group"):
        layer = outlier_layer(QuantSpec(4, True, granularity, group_size=32))
        calibrate_weights(nn.Sequential(layer), method)
        errors[granularity] = weight_error(layer)
    assert errors["group"] < 0.5 * errors["channel"]


def test_group_scales_match_each_group_and_ragged_rows_are_padded():
    q = Quantizer("c.weight_quantizer", "weight", QuantSpec(4, False, "group", group_size=16))
    conv = nn.Conv1d(5, 3, 5)  # rows of 25: one full group of 16 and one of 9
    calibrate_weights(quantize_model(nn.Sequential(conv), Placement(weight=q.spec)))
    wq = conv.weight_quantizer
    assert wq.scale.shape == (3, 2)
    rows = conv.weight.detach().reshape(3, -1)
    lo, hi = rows[:, 16:].amin(1).clamp(max=0), rows[:, 16:].amax(1).clamp(min=0)
    torch.testing.assert_close(wq.scale[:, 1], (hi - lo) / 15)
    out = wq(conv.weight.detach())
    assert out.shape == conv.weight.shape
    assert ((out - conv.weight).abs().reshape(3, -1)[:, 16:] <= wq.scale[:, 1:] / 2 + 1e-6).all()
    assert torch.equal(wq(out), out)  # idempotent: already on the grid


def test_group_granularity_is_validated():
    with pytest.raises(ValueError, match="'x': activation groups of 1 feature"):
        QuantSpec(8, granularity="group", group_size=1).validated("x", "activation")
    with pytest.raises(ValueError, match="group_size"):
        QuantSpec(4, granularity="group", group_size=0).validated("x", "weight")
    assert Rule.from_dict({"match": "*", "group_size": 64}).overrides == {"group_size": 64}


def test_a_rule_keeps_chosen_layers_at_8_bits_per_channel():
    model = nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 64))
    placement = Placement.from_config({"weight": {"bits": 4, "granularity": "group", "group_size": 32}},
                                      [{"match": "1.weight_quantizer", "bits": 8, "granularity": "channel"}])
    quantize_model(model, placement)
    calibrate_weights(model)
    assert (model[0].weight_quantizer.bits, model[0].weight_quantizer.scale.shape) == (4, (8, 2))
    assert (model[1].weight_quantizer.bits, model[1].weight_quantizer.scale.shape) == (8, (64,))


def test_calibrated_weights_keep_their_grid_unless_overwritten():
    layer = outlier_layer(QuantSpec(4, True, "channel"))
    model = nn.Sequential(layer)
    assert calibrate_weights(model) == 1
    scale = layer.weight_quantizer.scale.clone()
    with torch.no_grad():
        layer.weight.mul_(0.5)
    assert calibrate_weights(model, "mse") == 0
    assert torch.equal(layer.weight_quantizer.scale, scale)
    assert calibrate_weights(model, "minmax", overwrite=True) == 1
    torch.testing.assert_close(layer.weight_quantizer.scale, scale / 2)
