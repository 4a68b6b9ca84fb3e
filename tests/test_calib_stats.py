"""The statistics pass (esc.calib.stats): widening histogram, error paths, observers on a model."""

import math

import pytest
import torch
from torch import nn

from esc.calib.base import Calibrator
from esc.calib.minmax import MinMaxCalibrator
from esc.calib.stats import ActivationStats, NonFiniteActivationError, collect_statistics
from esc.calib.weights import calibrate_weights
from esc.quant.model import quantize_model, quantizers
from esc.quant.placement import Placement, Rule


def test_widening_histogram_equals_histogram_at_final_range():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(3000, generator=g) * s for s in (0.5, 1.5, 7.0, 7.0, 40.0)]
    stats = ActivationStats("x", bins=64)
    for b in batches:
        stats.update(b)
    data = torch.cat(batches)
    assert stats.count == data.numel() and stats.hist.sum().item() == data.numel()
    assert stats.min == data.min().item() and stats.max == data.max().item()
    first_amax = batches[0].abs().max().item()
    assert stats.range >= data.abs().max().item()
    assert math.log2(stats.range / first_amax) == round(math.log2(stats.range / first_amax))  # doubled each time
    direct = torch.histc(data, bins=128, min=-stats.range, max=stats.range).double()
    # equal up to values lying exactly on a bin edge (each batch's own extreme sat on its closed upper edge)
    diff = (stats.hist - direct).abs()
    assert diff.sum() <= 2 * len(batches)
    assert (stats.hist.cumsum(0) - direct.cumsum(0)).abs().max() <= len(batches)
    # the |x| histogram folds the negative half onto the positive one
    torch.testing.assert_close(stats.abs_hist(), torch.histc(data.abs(), bins=64, min=0, max=stats.range).double(),
                               atol=2 * len(batches), rtol=0)


def test_leading_all_zero_batches_are_counted_at_zero():
    stats = ActivationStats("relu", bins=8)
    stats.update(torch.zeros(5))
    assert stats.count == 5 and stats.range == 0.0 and stats.hist.sum() == 0
    stats.update(torch.tensor([0.0, 1.0, -0.5]))
    assert stats.count == 8 and stats.hist.sum() == 8
    assert stats.hist[8].item() == 6  # the first non-negative bin holds every zero
    assert stats.min == -0.5 and stats.max == 1.0 and stats.amax == 1.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_raise_naming_the_quantizer(bad):
    stats = ActivationStats("enc.fc1.input_quantizer", bins=8)
    stats.update(torch.ones(3))
    with pytest.raises(NonFiniteActivationError, match="enc.fc1.input_quantizer"):
        stats.update(torch.tensor([1.0, bad]))
    assert stats.count == 3


def small_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    return quantize_model(model, Placement())


def test_non_finite_activation_in_a_model_names_the_quantizer_and_detaches_observers():
    model = small_model()
    calibrate_weights(model)
    x = torch.randn(3, 4)
    x[1, 2] = float("nan")
    with pytest.raises(NonFiniteActivationError, match="'0.input_quantizer'"):
        collect_statistics(model, lambda m: m(x))
    assert all(q.observer is None for q in quantizers(model))


def test_empty_forward_loop_raises_a_clear_error():
    model = small_model()
    calibrate_weights(model)
    with pytest.raises(ValueError, match="saw no data"):
        collect_statistics(model, lambda m: None)
    with pytest.raises(ValueError, match="saw no data"):
        MinMaxCalibrator().calibrate(model, lambda m: [m(b) for b in []])


def test_bins_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        ActivationStats("x", bins=100)


def test_collect_observes_only_enabled_static_activations_and_passes_data_through():
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2)),
                           Placement(rules=[Rule.from_dict({"match": "1.*", "enabled": False}),
                                            Rule.from_dict({"match": "3.input_quantizer", "granularity": "token"})]))
    calibrate_weights(model)
    x = torch.randn(5, 4)
    seen = []
    stats = collect_statistics(model, lambda m: seen.append(m(x)))
    assert set(stats) == {"0.input_quantizer", "2.input_quantizer"}
    assert stats["0.input_quantizer"].count == x.numel()
    assert stats["0.input_quantizer"].max == x.max().item()
    assert stats["2.input_quantizer"].min >= 0.0  # after the ReLU
    # observing activations pass through unquantized; weights and dynamic activations keep quantizing
    for q in quantizers(model, "activation"):
        q.enabled = q.enabled and q.is_dynamic
    with torch.no_grad():
        assert torch.equal(seen[0], model(x))


def test_quantizer_that_saw_no_data_is_reported_and_left_uncalibrated(caplog):
    model = small_model()
    calibrate_weights(model)

    def loop(m):  # runs the first layer only
        m[0](torch.randn(2, 4))

    calibrator = MinMaxCalibrator()
    with caplog.at_level("WARNING"):
        calibrator.apply(model, collect_statistics(model, loop))
    assert model[0].input_quantizer.is_calibrated
    assert not model[2].input_quantizer.is_calibrated
    assert any("2.input_quantizer" in r.getMessage() for r in caplog.records)


def test_calibrator_is_abstract_and_reset_forgets():
    with pytest.raises(TypeError):
        Calibrator()
    c = MinMaxCalibrator()
    model = small_model()
    c.calibrate(model, lambda m: m(torch.randn(2, 4)))
    assert set(c.stats) == {"0.input_quantizer", "2.input_quantizer"}
    c.reset()
    assert c.stats == {}
