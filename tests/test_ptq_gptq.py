"""GPTQ: lower layer-output error than round-to-nearest, exactly on the quantizer's grid, Linear and Conv."""

import copy

import pytest
import torch
from torch import nn

from esc.calib.weights import calibrate_weights
from esc.ptq.gptq import GPTQ
from esc.quant.model import quantize_model
from esc.quant.placement import Placement
from esc.quant.spec import QuantSpec
from ptq_helpers import LAYER_KINDS, ModuleAdapter, Single, assert_on_grid, correlated_batches, make_layer


def quantized(layer: nn.Module, spec: QuantSpec) -> nn.Module:
    model = quantize_model(Single(layer), Placement(weight=spec))
    calibrate_weights(model)
    return model


def output_error(model: nn.Module, fp: nn.Module, batches) -> float:
    model.layer.input_quantizer.enabled = False
    with torch.no_grad():
        return sum((model(**b) - fp(**b)).pow(2).mean().item() for b in batches)


@pytest.mark.parametrize("layer_kind", LAYER_KINDS)
@pytest.mark.parametrize("spec, act_order", [(QuantSpec(4, True, "channel"), True),
                                             (QuantSpec(4, False, "group", group_size=16), True),
                                             (QuantSpec(4, True, "group", group_size=16), False),
                                             (QuantSpec(8, True, "channel"), True)])
def test_gptq_beats_round_to_nearest_and_stays_on_the_grid(layer_kind, spec, act_order):
    torch.manual_seed(0)
    layer = make_layer(layer_kind)
    fp = Single(layer)
    batches = correlated_batches(layer)
    rtn = quantized(copy.deepcopy(layer), spec)
    model = quantized(copy.deepcopy(layer), spec)
    report = GPTQ(act_order=act_order, block_size=8).after_weight_calibration(ModuleAdapter(model), batches)
    assert model.layer.input_quantizer.enabled  # restored after the stage switched activations off
    entry = report["layers"]["layer"]
    assert entry["error"] < 0.5 * entry["error_rtn"]
    # measured on the real outputs, not only by the stage's own bookkeeping
    assert output_error(model, fp, batches) < 0.5 * output_error(rtn, fp, batches)
    assert_on_grid(model.layer)


def test_layers_are_processed_in_passes_within_the_budget_and_tied_weights_are_skipped():
    torch.manual_seed(0)
    first, second = nn.Linear(16, 16), nn.Linear(16, 16)
    model = nn.Sequential(first, second)
    tied = nn.Linear(16, 16)
    tied.weight = second.weight
    model.append(nn.Identity())
    model.tied = tied  # registered, never called: only its sharing of `second.weight` matters
    quantize_model(model, Placement(weight=QuantSpec(4)))
    calibrate_weights(model)
    batches = [{"input": torch.randn(32, 16)} for _ in range(2)]
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    report = GPTQ(budget_mb=0).after_weight_calibration(ModuleAdapter(model), batches)
    assert list(report["layers"]) == ["0"]
    assert report["skipped"] == {"1": "tied weight", "tied": "tied weight"}
    assert len(calls) == 2  # one pass per layer at budget 0: one layer, two batches


def test_options_are_validated():
    with pytest.raises(ValueError, match="percdamp"):
        GPTQ(percdamp=1.5)
    with pytest.raises(ValueError, match="block_size"):
        GPTQ(block_size=0)
