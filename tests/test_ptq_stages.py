"""The PTQ stage protocol: config group, chains in order, and every stage with every calibrator."""

import copy
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ptq_helpers import tiny_ast_with_batches
from run_helpers import compose_run

from esc.calib.registry import make_calibrator
from esc.calib.weights import calibrate_weights
from esc.ptq.base import PTQStage
from esc.ptq.registry import build_stages, run_stages
from esc.quant.model import quantize_model, quantizers
from esc.quant.placement import Placement

CONF = Path(__file__).resolve().parents[1] / "conf"
OPTIONS = sorted(p.stem for p in (CONF / "ptq").glob("*.yaml"))
FAST = {"esc.ptq.adaround.AdaRound": {"iterations": 20}}  # keep the combinations quick
CALIBRATORS = {"minmax": {}, "percentile": {}, "mse": {}, "esc": {"popsize": 4, "max_generations": 1}}
# entropy costs ~10 s per calibration of the tiny AST: it runs once, after a chain of every stage
EVERY_STAGE = ["esc.ptq.smoothquant.SmoothQuant", "esc.ptq.rotation.Rotation", "esc.ptq.gptq.GPTQ",
               "esc.ptq.adaround.AdaRound", "esc.ptq.bias_correction.BiasCorrection"]


def stages_of(option: str) -> list[dict]:
    """The option's stage configs as a default run (W8A8) resolves them (SmoothQuant takes the run's bits)."""
    if option == "every":
        return [{"_target_": target} for target in EVERY_STAGE]
    return OmegaConf.to_container(compose_run(f"ptq={option}", "quant=w8a8").ptq, resolve=True)["stages"]


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_builds_and_its_options_are_the_stage_defaults(option):
    stages = build_stages(stages_of(option))
    assert [type(s).__name__ for s in stages] == [c["_target_"].rsplit(".", 1)[1] for c in stages_of(option)]
    for cfg in stages_of(option):  # a chain lists targets only, so each file's values must be the code's defaults
        cls = type(build_stages([{"_target_": cfg["_target_"]}])[0])
        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
        for key, value in cfg.items():
            if key != "_target_":
                assert list(np.atleast_1d(defaults[key])) == list(np.atleast_1d(value)), (option, key)
    assert {"smoothquant+gptq", "rotation+gptq", "gptq", "adaround", "smoothquant", "rotation", "none"} <= set(OPTIONS)


def test_a_stage_option_set_on_the_command_line_reaches_the_stage():
    cfg = compose_run("ptq=rotation+gptq", "+ptq.stages.0.convolutions=true", "+ptq.stages.0.queries_keys=true",
                      "quant=w8a8").ptq
    rotation, _ = build_stages(OmegaConf.to_container(cfg, resolve=True)["stages"])
    assert rotation.convolutions is True and rotation.queries_keys is True
    default = build_stages(stages_of("rotation"))[0]
    assert default.convolutions is False and default.queries_keys is False


def test_a_chain_runs_its_stages_in_order_per_phase():
    calls = []

    class Recorder(PTQStage):
        def __init__(self, name, phases):
            self.name, self.phases = name, phases

        def before_quantize(self, adapter, batches):
            return self._record("before_quantize")

        def after_weight_calibration(self, adapter, batches):
            return self._record("after_weight_calibration")

        def _record(self, phase):
            if phase not in self.phases:
                return None
            calls.append((self.name, phase))
            return {"layers": {}}

    stages = [Recorder("a", {"before_quantize"}), Recorder("b", {"before_quantize", "after_weight_calibration"}),
              Recorder("c", {"after_weight_calibration"})]
    reports = run_stages(stages, "before_quantize", None, [])
    reports += run_stages(stages, "after_weight_calibration", None, [])
    assert calls == [("a", "before_quantize"), ("b", "before_quantize"), ("b", "after_weight_calibration"),
                     ("c", "after_weight_calibration")]
    assert [(r["stage"], r["phase"]) for r in reports] == calls and all(r["seconds"] >= 0 for r in reports)
    with pytest.raises(ValueError, match="unknown PTQ phase"):
        run_stages(stages, "during", None, [])
    with pytest.raises(TypeError, match="not a PTQStage"):
        build_stages([{"_target_": "builtins.dict"}])


@pytest.fixture(scope="module")
def tiny_ast():
    return tiny_ast_with_batches()


def prepared(option, tiny_ast):
    """The tiny AST after the option's stages, W4A8 with group-wise weights: FP stages, quantize, weights,
    then the weight-rewriting stages. Returns the adapter, the batches, the reports and the stages."""
    adapter, batches = copy.deepcopy(tiny_ast[0]), tiny_ast[1]
    stages = build_stages([{**c, **FAST.get(c["_target_"], {})} for c in stages_of(option)])
    reports = run_stages(stages, "before_quantize", adapter, batches)
    quant = OmegaConf.to_container(OmegaConf.load(CONF / "quant" / "w8a8.yaml"))
    quant["weight"] = {"bits": 4, "granularity": "group", "group_size": 32}
    quantize_model(adapter.model, Placement.from_config(quant))
    calibrate_weights(adapter.model, "mse")
    reports += run_stages(stages, "after_weight_calibration", adapter, batches)
    return adapter, batches, reports, stages


@pytest.mark.parametrize("option, calibrators", [(o, CALIBRATORS) for o in OPTIONS if o != "none"]
                         + [("every", {"entropy": {}})])
def test_every_stage_composes_with_every_calibrator(option, calibrators, tiny_ast):
    adapter, batches, reports, stages = prepared(option, tiny_ast)
    weights = {q.name: p.detach().clone() for q, p in _weights(adapter.model)}
    scales = {q.name: q.scale.clone() for q in quantizers(adapter.model, "weight")}
    for name, options in calibrators.items():
        model_state = copy.deepcopy(adapter.model.state_dict())
        calibrator = make_calibrator(name, weight_method="minmax", **options)
        if hasattr(calibrator, "bind"):
            calibrator.bind(adapter, batches)
        calibrator.calibrate(adapter.model, lambda m: [adapter.forward(b) for b in batches])
        every = reports + run_stages(stages, "after_calibration", adapter, batches)
        assert [r["stage"] for r in every] == [type(s).name for s in stages]
        assert all(r["layers"] and r["seconds"] >= 0 for r in every)
        # the activation calibrator keeps the stage's weight grid, and the weights stay on it
        for q, p in _weights(adapter.model):
            assert torch.equal(q.scale, scales[q.name]) and torch.equal(p.detach(), weights[q.name])
            if any(r["phase"] == "after_weight_calibration" for r in reports):
                assert torch.equal(q(p.detach()), p.detach())
        with torch.no_grad():
            assert all(torch.isfinite(adapter.forward(b)).all() for b in batches)
        adapter.model.load_state_dict(model_state)


def _weights(model):
    return [(m.weight_quantizer, m.weight) for m in model.modules()
            if hasattr(m, "weight_quantizer") and m.weight_quantizer.enabled]
