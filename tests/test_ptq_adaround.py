"""AdaRound: learned rounding reconstructs a layer's output better than round-to-nearest, on the grid."""

import copy

import pytest
import torch

from esc.calib.weights import calibrate_weights
from esc.ptq.adaround import AdaRound
from esc.quant.model import quantize_model
from esc.quant.placement import Placement
from esc.quant.spec import QuantSpec
from ptq_helpers import LAYER_KINDS, ModuleAdapter, Single, assert_on_grid, correlated_batches, make_layer


@pytest.mark.parametrize("layer_kind", LAYER_KINDS)
@pytest.mark.parametrize("spec", [QuantSpec(4, True, "channel"), QuantSpec(3, False, "group", group_size=16)])
def test_adaround_beats_round_to_nearest_on_the_grid(layer_kind, spec):
    torch.manual_seed(0)
    layer = make_layer(layer_kind)
    fp = Single(copy.deepcopy(layer))
    batches = correlated_batches(layer)
    model = quantize_model(Single(layer), Placement(weight=spec))
    calibrate_weights(model)
    rtn_weight = model.layer.weight_quantizer(model.layer.weight.detach()).clone()
    report = AdaRound(iterations=150).after_weight_calibration(ModuleAdapter(model), batches)
    entry = report["layers"]["layer"]
    assert entry["learned"] and entry["error"] < 0.7 * entry["error_rtn"]
    assert_on_grid(model.layer)
    weight = model.layer.weight.detach()
    assert not torch.equal(weight, rtn_weight)
    # every weight moved to one of its two neighbouring grid points
    assert ((weight - fp.layer.weight).abs() <= model.layer.weight_quantizer.scale.max() * 1.0001).all()


def test_options_are_validated():
    with pytest.raises(ValueError, match="iterations"):
        AdaRound(iterations=0)
