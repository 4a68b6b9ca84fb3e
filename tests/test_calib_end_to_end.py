"""Every standard calibrator on every tiny model family: W8A8 stays closer to FP than W4A4."""

import copy
import functools

import pytest
import torch

import esc.calib.base
from conftest import FAMILIES
from esc.calib.registry import make_calibrator
from esc.calib.stats import collect_statistics
from esc.quant.model import census, quantize_model, quantizers
from esc.quant.placement import Placement
from esc.quant.spec import QuantSpec

STANDARD = ("minmax", "percentile", "mse", "entropy")


@pytest.fixture(autouse=True)
def small_histograms(monkeypatch):
    # 256 bins per sign instead of 2048: the same code paths, a tenth of the entropy/MSE search time
    monkeypatch.setattr(esc.calib.base, "collect_statistics", functools.partial(collect_statistics, bins=256))


def wxax(bits: int) -> Placement:
    return Placement(weight=QuantSpec(bits, True, "channel"), activation=QuantSpec(bits))


def relative_error(model, fp, batch) -> float:
    with torch.no_grad():
        out, ref = model(**batch).logits, fp(**batch).logits
    return ((out - ref).norm() / ref.norm()).item()


def test_eight_bits_beat_four_bits_for_every_calibrator(family):
    fp = family.build()
    batches = [family.batch(seed) for seed in (1, 2, 3)]
    calls = []

    def forward_loop(model):
        calls.append(1)
        for b in batches:
            model(**b)

    held_out = family.batch(10)
    errors = {}
    for name in STANDARD:
        for bits in (8, 4):
            model = quantize_model(copy.deepcopy(fp), wxax(bits))
            stats = make_calibrator(name).calibrate(model, forward_loop)
            assert all(s.count > 0 for s in stats.values())
            assert all(q.is_calibrated for q in quantizers(model)), name
            assert "uncalibrated" not in census(model)
            errors[name, bits] = relative_error(model, fp, held_out)
    assert len(calls) == 2 * len(STANDARD)  # one statistics pass per calibration
    for name in STANDARD:
        assert 0 < errors[name, 8] < errors[name, 4], (name, errors)
        assert errors[name, 8] < 0.25, (name, errors)


def test_percentile_value_reaches_the_model():
    fam = FAMILIES["ast"]
    fp = fam.build()
    batches = [fam.batch(seed) for seed in (1, 2)]
    held_out = fam.batch(10)
    outputs, scales = {}, {}
    for p in (99.0, 99.99):
        model = quantize_model(copy.deepcopy(fp), wxax(8))
        make_calibrator("percentile", percentile=p).calibrate(model, lambda m: [m(**b) for b in batches])
        scales[p] = {q.name: q.scale.item() for q in quantizers(model, "activation")}
        with torch.no_grad():
            outputs[p] = model(**held_out).logits
    assert not torch.equal(outputs[99.0], outputs[99.99])
    assert all(scales[99.0][n] <= scales[99.99][n] for n in scales[99.0])
    assert any(scales[99.0][n] < scales[99.99][n] for n in scales[99.0])


def test_mse_weight_method_option_reaches_the_weights():
    fam = FAMILIES["w2v_ctc"]
    fp = fam.build()
    batch = fam.batch(1)
    weight_scales = {}
    for method in ("minmax", "mse"):
        model = quantize_model(copy.deepcopy(fp), wxax(4))
        make_calibrator("minmax", weight_method=method).calibrate(model, lambda m: m(**batch))
        weight_scales[method] = torch.cat([q.scale.flatten() for q in quantizers(model, "weight")])
    assert (weight_scales["mse"] <= weight_scales["minmax"] * (1 + 1e-6)).all()
    assert (weight_scales["mse"] < weight_scales["minmax"]).any()
