"""Bias correction: quantized channel means back to FP, layers without a bias, passes, clear errors."""

import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ptq_helpers import ModuleAdapter
from run_helpers import compose_run

from esc.calib.registry import make_calibrator
from esc.calib.weights import calibrate_weights
from esc.calib.fitness import Fitness
from esc.ptq import bias_correction
from esc.ptq.bias_correction import BiasCorrection
from esc.ptq.registry import build_stages
from esc.quant.model import quantize_model, quantizers_off
from esc.quant.placement import Placement
from esc.quant.spec import QuantSpec


class Block(nn.Module):
    """Linear -> GELU -> Linear (no bias) -> GELU -> Linear: post-GELU inputs, whose small values round to zero
    together at 4 bits, so the next layer's outputs shift by a systematic per-channel offset."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(16, 48)
        self.second = nn.Linear(48, 32, bias=False)
        self.third = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.third(nn.functional.gelu(self.second(nn.functional.gelu(self.first(x)))))


class CountingAdapter(ModuleAdapter):
    task = "classification"  # the guard's fitness: KL of the (64, 8) outputs' softmax to FP's

    def __init__(self, model):
        super().__init__(model)
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        return super().forward(batch)


def calibrated(calibrate: bool = True, seed: int = 0):
    """The block at W8A4 (per-tensor activations), weights and (optionally) activations calibrated, its FP copy,
    and batches."""
    torch.manual_seed(seed)
    model = Block()
    fp = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    batches = [{"x": torch.randn(64, 16, generator=g) * 2} for _ in range(4)]
    adapter = CountingAdapter(model)
    quantize_model(model, Placement(weight=QuantSpec(8, True, "channel"), activation=QuantSpec(4, True, "tensor")))
    calibrate_weights(model, "minmax")
    if calibrate:
        make_calibrator("minmax").calibrate(model, lambda m: [adapter.forward(b) for b in batches])
    return adapter, fp, batches


def channel_offset(adapter, fp, batches, layer: str) -> torch.Tensor:
    """FP minus quantized per-channel output means of `layer` over the batches."""
    outs = {}
    for key, model in (("fp", fp), ("q", adapter.model)):
        captured = []
        hook = dict(model.named_modules())[layer].register_forward_hook(lambda m, a, o: captured.append(o.detach()))
        with torch.no_grad():
            for b in batches:
                model(**b)
        hook.remove()
        outs[key] = torch.cat(captured).double().mean(0)
    return outs["fp"] - outs["q"]


def output_error(adapter, fp, batches) -> float:
    with torch.no_grad():
        return sum(float(((adapter.model(**b) - fp(**b)) ** 2).mean()) for b in batches) / len(batches)


def test_correction_gives_every_layer_the_fp_channel_means():
    adapter, fp, batches = calibrated()
    offsets = {n: float(channel_offset(adapter, fp, batches, n).abs().mean()) for n in ("second", "third")}
    error_before = output_error(adapter, fp, batches)
    report = BiasCorrection(guard=False).after_calibration(adapter, batches)
    assert list(report["layers"]) == ["first", "second", "third"]
    for name in ("second", "third"):
        assert offsets[name] > 1e-3  # the 4-bit post-GELU inputs did shift the channel means
        assert report["layers"][name]["offset_before"] > 1e-3
        assert report["layers"][name]["offset_after"] < 1e-6
        assert channel_offset(adapter, fp, batches, name).abs().max() < 1e-5
    assert output_error(adapter, fp, batches) < error_before  # the last correction removes the mean error


def test_a_layer_without_bias_gets_one_and_only_biases_change():
    adapter, fp, batches = calibrated()
    assert adapter.model.second.bias is None
    weights = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    BiasCorrection().after_calibration(adapter, batches)
    assert isinstance(adapter.model.second.bias, nn.Parameter) and adapter.model.second.bias.abs().sum() > 0
    for name, p in adapter.model.named_parameters():
        if not name.endswith("bias"):
            assert torch.equal(p, weights[name]), name


def test_one_pass_per_layer_plus_the_fp_and_report_passes():
    adapter, _, batches = calibrated()
    adapter.calls = 0
    BiasCorrection(guard=False).after_calibration(adapter, batches)
    assert adapter.calls == (1 + 3 + 1) * len(batches)
    adapter.calls = 0
    BiasCorrection().after_calibration(adapter, batches)  # the guard: FP targets, a start and one check per layer
    assert adapter.calls == (1 + 3 + 1 + 1 + 1 + 3) * len(batches)


def test_guard_keeps_only_corrections_that_do_not_raise_the_calibration_kl():
    adapter, _, batches = calibrated()
    report = BiasCorrection().after_calibration(adapter, batches)
    fitness = Fitness(adapter, batches)
    assert report["kl_after"] <= report["kl_before"]
    assert fitness(adapter.model) == pytest.approx(report["kl_after"], rel=1e-6)
    assert [layer["kl"] for layer in report["layers"].values()] == sorted(
        (layer["kl"] for layer in report["layers"].values()), reverse=True)


@pytest.mark.parametrize("override, guarded", [([], True), (["ptq.stages.0.guard=false"], False)])
def test_the_guard_setting_reaches_the_stage_from_the_run_config(override, guarded):
    cfg = compose_run("ptq=bias_correction", *override)
    (stage,) = build_stages(OmegaConf.to_container(cfg.ptq, resolve=True)["stages"])
    adapter, _, batches = calibrated()
    report = stage.after_calibration(adapter, batches)
    assert ("kl_before" in report) is guarded
    assert all(("kept" in layer) is guarded for layer in report["layers"].values())


def test_guard_restores_a_rejected_layer_exactly(monkeypatch):
    scripted = iter([1.0, 0.5, 0.9, 0.4])  # start, then after first (kept), second (rejected), third (kept)

    class ScriptedFitness:
        def __init__(self, adapter, batches):
            pass

        def __call__(self, model):
            return next(scripted)

    monkeypatch.setattr(bias_correction, "Fitness", ScriptedFitness)
    adapter, _, batches = calibrated()
    first_bias = adapter.model.first.bias.detach().clone()
    report = BiasCorrection().after_calibration(adapter, batches)
    assert [layer["kept"] for layer in report["layers"].values()] == [True, False, True]
    assert [layer["kl"] for layer in report["layers"].values()] == [0.5, 0.5, 0.4]
    assert (report["kl_before"], report["kl_after"]) == (1.0, 0.4)
    assert torch.equal(adapter.model.second.bias, torch.zeros(32))  # had none: an exact zero bias
    assert not torch.equal(adapter.model.first.bias, first_bias)
    assert report["layers"]["second"]["offset_after"] > 1e-3


def test_max_batches_and_match_limit_the_work():
    adapter, fp, batches = calibrated()
    adapter.calls = 0
    report = BiasCorrection(match="third", max_batches=2).after_calibration(adapter, batches)
    assert list(report["layers"]) == ["third"] and report["batches"] == 2
    assert adapter.calls == (3 + 3) * 2  # FP means, the layer, the report; FP targets, start and check
    assert adapter.model.second.bias is None


def test_bad_settings_and_inputs_get_clear_errors():
    adapter, _, batches = calibrated(calibrate=False)
    with pytest.raises(RuntimeError, match="first.input_quantizer is not calibrated"):
        BiasCorrection().after_calibration(adapter, batches)
    adapter, _, batches = calibrated()
    with pytest.raises(ValueError, match="no quantized layer matches 'decoder.*'"):
        BiasCorrection(match="decoder.*").after_calibration(adapter, batches)
    with pytest.raises(ValueError, match="max_batches"):
        BiasCorrection(max_batches=0)
    with pytest.raises(ValueError, match="no calibration batches"):
        BiasCorrection().after_calibration(adapter, [])
    with quantizers_off(adapter.model, "activation"), torch.no_grad():
        adapter.model.first.bias[0] = float("nan")
    with pytest.raises(FloatingPointError, match="layer first has non-finite outputs"):
        BiasCorrection().after_calibration(adapter, batches)
