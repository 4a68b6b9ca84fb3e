"""The FP reference inside a quantized model stays the FP model after stages rewrite weights and biases."""

import copy

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.nn.utils import parametrize

from ptq_helpers import tiny_ast_with_batches
from run_helpers import CONF

from esc.calib.fitness import Fitness
from esc.calib.registry import make_calibrator
from esc.calib.weights import calibrate_weights
from esc.models.registry import build_adapter
from esc.ptq.adaround import AdaRound
from esc.ptq.bias_correction import BiasCorrection
from esc.ptq.gptq import GPTQ
from esc.quant.model import quantize_model, quantizers_off
from esc.quant.placement import Placement
from esc.quant.spec import QuantSpec
from esc.quant.reference import fp_reference


def tiny_ast_w4a4():
    adapter, batches = tiny_ast_with_batches()
    fp = copy.deepcopy(adapter.model)
    quant = OmegaConf.to_container(OmegaConf.load(CONF / "quant" / "w8a8.yaml"))
    quant["weight"]["bits"] = quant["activation"]["bits"] = 4
    quantize_model(adapter.model, Placement.from_config(quant))
    calibrate_weights(adapter.model, "mse")
    return adapter, fp, batches


def logits(model, batches):
    with torch.no_grad():
        return [model(**b).logits for b in batches]


def test_fp_reference_is_the_fp_model_after_gptq_adaround_and_bias_correction():
    adapter, fp, batches = tiny_ast_w4a4()
    expected = logits(fp, batches)
    GPTQ().after_weight_calibration(adapter, batches[:1])
    AdaRound(iterations=5).after_weight_calibration(adapter, batches[:1])
    make_calibrator("mse").calibrate(adapter.model, lambda m: [adapter.forward(b) for b in batches])
    BiasCorrection().after_calibration(adapter, batches)
    quantized = logits(adapter.model, batches)
    with quantizers_off(adapter.model):  # the rewritten weights and biases alone: not the FP model any more
        assert not all(torch.equal(a, b) for a, b in zip(logits(adapter.model, batches), expected))
    with fp_reference(adapter.model):
        assert all(torch.equal(a, b) for a, b in zip(logits(adapter.model, batches), expected))
    # and the quantized model is back afterwards, rewritten parameters included
    assert all(torch.equal(a, b) for a, b in zip(logits(adapter.model, batches), quantized))


def test_esc_fitness_targets_are_the_fp_model_after_gptq():
    adapter, fp, batches = tiny_ast_w4a4()
    GPTQ().after_weight_calibration(adapter, batches)
    fp_adapter = copy.copy(adapter)
    fp_adapter.model = fp
    ours = Fitness(adapter, batches).fp_targets()
    reference = Fitness(fp_adapter, batches).fp_targets()
    for (p, mask, plogp), (p_ref, mask_ref, plogp_ref) in zip(ours, reference):
        assert torch.equal(p, p_ref) and torch.equal(mask, mask_ref) and plogp == plogp_ref


def test_gptq_rewrites_wav2vec2s_grouped_weight_normed_positional_conv_keeping_its_fp_reference():
    torch.manual_seed(0)
    adapter = build_adapter(OmegaConf.to_container(OmegaConf.load(CONF / "model" / "wav2vec2_kws_tiny.yaml")))
    rng = np.random.default_rng(0)
    batches = [adapter.collate([(0.1 * rng.standard_normal(8000)).astype(np.float32) for _ in range(2)])
               for _ in range(2)]
    expected = logits(copy.deepcopy(adapter.model), batches)
    quantize_model(adapter.model, Placement(weight=QuantSpec(4)))
    calibrate_weights(adapter.model)
    report = GPTQ().after_weight_calibration(adapter, batches)
    name = "wav2vec2.encoder.pos_conv_embed.conv"
    conv = adapter.model.get_submodule(name)
    assert conv.groups == 2 and parametrize.is_parametrized(conv, "weight")  # still grouped and weight-normed
    assert name not in report["skipped"] and report["layers"][name]["error"] < report["layers"][name]["error_rtn"]
    with quantizers_off(adapter.model):  # its rewritten weight alone moves the outputs
        assert not all(torch.equal(a, b) for a, b in zip(logits(adapter.model, batches), expected))
    with fp_reference(adapter.model):
        assert all(torch.equal(a, b) for a, b in zip(logits(adapter.model, batches), expected))
