"""Quantizer insertion on tiny models of every family: census, bit-exact off state, scales save/load."""

import copy
import re

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from conftest import FAMILIES
from esc.calib.registry import make_calibrator
from esc.calib.weights import calibrate_weights
from esc.quant.model import (
    census,
    load_scales,
    quantize_model,
    quantizer_state,
    quantizers,
    save_scales,
    set_enabled,
)
from esc.quant.placement import Placement, Rule
from esc.quant.quantizer import Quantizer
from esc.quant.spec import QuantSpec

ATTENTION_ATTRS = ("query_quantizer", "key_quantizer", "probs_quantizer", "value_quantizer")


def expected_census(model: nn.Module, attention_classes) -> tuple[set[str], set[str]]:
    """Weight and activation quantizer names, from the FP module tree alone."""
    present = {type(m).__name__ for m in model.modules()}
    attention_class = next(c for c in attention_classes if c in present)
    weights, acts = set(), set()
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            weights.add(prefix + "weight_quantizer")
            acts.add(prefix + "input_quantizer")
        if type(module).__name__ == attention_class:
            acts |= {prefix + a for a in ATTENTION_ATTRS}
    return weights, acts


def run(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def loop_over(batches):
    def forward_loop(model):
        for b in batches:
            model(**b)
    return forward_loop


def test_census_matches_module_tree(family):
    model = family.build()
    weights, acts = expected_census(model, family.attention_classes)
    assert any("attn" in n or "attention" in n for n in acts)
    quantize_model(model, Placement())
    names = {q.name for q in quantizers(model)}
    assert names == weights | acts
    assert {q.name for q in quantizers(model, "weight")} == weights
    assert {q.name for q in quantizers(model, "activation")} == acts
    # every quantizer is registered under its own name
    assert {n for n, m in model.named_modules() if isinstance(m, Quantizer)} == names
    lines = census(model).splitlines()
    assert len(lines) == len(names) + 1
    assert lines[-1] == f"{len(names)} quantizers ({len(weights)} weight, {len(acts)} activation)"
    assert all("uncalibrated" in line for line in lines[:-1] if "per-token" not in line)
    if family.name.startswith("w2v"):
        conv_names = {n for n in weights if "feature_extractor.conv_layers" in n}
        assert len(conv_names) == 2
        assert "wav2vec2.encoder.pos_conv_embed.conv.weight_quantizer" in weights
    if family.name == "whisper":
        assert {"model.encoder.conv1.weight_quantizer", "model.decoder.layers.1.encoder_attn.probs_quantizer",
                "proj_out.weight_quantizer"} <= names


def test_all_quantizers_off_is_bit_exact(family):
    fp = family.build()
    model = quantize_model(copy.deepcopy(fp), Placement())
    assert model.config._attn_implementation != "eager"  # the quantized attention function is in use
    set_enabled(model, False)
    assert not any(q.enabled for q in quantizers(model))
    for seed in (0, 1):
        batch = family.batch(seed)
        assert torch.equal(run(model, batch), run(fp, batch))


def test_whisper_decoder_is_causal_and_matches_eager():
    fam = FAMILIES["whisper"]
    fp = fam.build()
    model = quantize_model(copy.deepcopy(fp), Placement())
    set_enabled(model, False)
    batch = fam.batch(0)
    assert batch["decoder_input_ids"].shape[1] > 1
    with torch.no_grad():
        out_q = model(**batch, output_hidden_states=True)
        out_fp = fp(**batch, output_hidden_states=True)
    for hq, hf in zip(out_q.decoder_hidden_states, out_fp.decoder_hidden_states):
        assert torch.equal(hq, hf)
    # changing the last decoder token must not change earlier positions (the causal mask reaches the function)
    changed = dict(batch, decoder_input_ids=batch["decoder_input_ids"].clone())
    changed["decoder_input_ids"][:, -1] = (changed["decoder_input_ids"][:, -1] + 7) % 40
    a, b = run(model, batch), run(model, changed)
    assert torch.equal(a[:, :-1], b[:, :-1])
    assert not torch.equal(a[:, -1], b[:, -1])


def test_whisper_incremental_decoding_with_cache():
    fam = FAMILIES["whisper"]
    fp = fam.build()
    model = quantize_model(copy.deepcopy(fp), Placement())
    batch = fam.batch(0)
    ids, features = batch["decoder_input_ids"], batch["input_features"]

    def step_by_step(m):  # 4 tokens, then 2 more through the KV cache; and the full sequence at once
        with torch.no_grad():
            first = m(input_features=features, decoder_input_ids=ids[:, :4], use_cache=True)
            # transformers renamed past_key_values to cache (5.2x)
            cache = {"cache": first.cache} if "cache" in first else {"past_key_values": first.past_key_values}
            second = m(encoder_outputs=(first.encoder_last_hidden_state,), decoder_input_ids=ids[:, 4:],
                       use_cache=True, **cache)
            return torch.cat([first.logits, second.logits], 1), m(**batch).logits

    set_enabled(model, False)
    assert torch.equal(step_by_step(model)[0], step_by_step(fp)[0])
    set_enabled(model, True)
    make_calibrator("minmax").calibrate(model, loop_over([fam.batch(1)]))
    incremental, full = step_by_step(model)
    torch.testing.assert_close(incremental, full, rtol=1e-5, atol=1e-5)  # quantized keys/values from the cache
    assert not torch.allclose(full, step_by_step(fp)[1], atol=1e-4)


@pytest.mark.parametrize("name", ["w2v_ctc", "w2v_cls_stable"])
def test_wav2vec2_positional_conv_keeps_weight_norm(name):
    fam = FAMILIES[name]
    model = quantize_model(fam.build(), Placement())
    conv = model.wav2vec2.encoder.pos_conv_embed.conv
    assert parametrize.is_parametrized(conv, "weight")
    assert isinstance(conv, nn.Conv1d) and isinstance(conv.weight_quantizer, Quantizer)
    batch = fam.batch(0)
    set_enabled(model, False)
    before = run(model, batch)
    # the weight is still computed from the parametrization (g * v / |v|): scaling g changes the output
    with torch.no_grad():
        conv.parametrizations.weight.original0.mul_(1.5)
    assert not torch.equal(run(model, batch), before)
    # weight calibration reads the parametrized weight; quantizing only this weight at 2 bits changes outputs
    only_pos_conv = Placement(rules=[Rule.from_dict({"match": "*", "enabled": False}), Rule.from_dict(
        {"match": "*pos_conv_embed.conv.weight_quantizer", "enabled": True, "bits": 2})])
    model2 = quantize_model(fam.build(), only_pos_conv)
    assert [q.name for q in quantizers(model2) if q.enabled] == ["wav2vec2.encoder.pos_conv_embed.conv.weight_quantizer"]
    assert calibrate_weights(model2) == 1
    fp_out = run(fam.build(), batch)
    conv2 = model2.wav2vec2.encoder.pos_conv_embed.conv
    amax = conv2.weight.detach().abs().reshape(conv2.weight.shape[0], -1).amax(dim=1)
    torch.testing.assert_close(conv2.weight_quantizer.scale, amax / 1, rtol=1e-6, atol=0)  # 2 bits: qmax 1
    assert not torch.equal(run(model2, batch), fp_out)


def test_placement_without_attention_keeps_eager(family):
    model = quantize_model(family.build(), Placement(attention=False))
    assert model.config._attn_implementation == "eager"
    assert not any(n.endswith(ATTENTION_ATTRS) for n in (q.name for q in quantizers(model)))


def test_quantizing_twice_raises():
    model = nn.Sequential(nn.Linear(4, 4))
    quantize_model(model, Placement())
    with pytest.raises(ValueError, match="already holds quantizers"):
        quantize_model(model, Placement())


def test_save_and_load_scales_reproduce_outputs(family, tmp_path):
    fp = family.build()
    model = quantize_model(copy.deepcopy(fp), Placement())
    make_calibrator("minmax").calibrate(model, loop_over([family.batch(s) for s in (1, 2)]))
    batch = family.batch(3)
    out = run(model, batch)
    assert not torch.equal(out, run(fp, batch))
    path = save_scales(model, tmp_path / "sub" / "scales.pt")

    fresh = quantize_model(copy.deepcopy(fp), Placement())
    assert not any(q.is_calibrated for q in quantizers(fresh))
    load_scales(fresh, path)
    assert torch.equal(run(fresh, batch), out)
    for q_old, q_new in zip(quantizers(model), quantizers(fresh)):
        assert torch.equal(q_old.scale, q_new.scale) and torch.equal(q_old.zero_point, q_new.zero_point)

    # a model quantized at other bit widths refuses the scales
    other = quantize_model(copy.deepcopy(fp), Placement(activation=QuantSpec(4)))
    with pytest.raises(ValueError, match="bits"):
        load_scales(other, path)
    # ... and so does one whose activations sit on a log2 grid (same bits, other meaning of the scale)
    log2 = quantize_model(copy.deepcopy(fp), Placement(activation=QuantSpec(8, symmetric=False, grid="log2")))
    with pytest.raises(ValueError, match="uniform grid, model has log2"):
        load_scales(log2, path)


def test_state_dict_round_trip_restores_scales(family):
    fp = family.build()
    model = quantize_model(copy.deepcopy(fp), Placement())
    make_calibrator("minmax").calibrate(model, loop_over([family.batch(1)]))
    batch = family.batch(2)
    out = run(model, batch)
    state = model.state_dict()
    assert any(k.endswith("input_quantizer.scale") for k in state)

    fresh = quantize_model(copy.deepcopy(fp), Placement())
    assert all(q.scale.numel() == 0 for q in quantizers(fresh))
    fresh.load_state_dict(state)
    assert torch.equal(run(fresh, batch), out)
    restored, original = quantizer_state(fresh), quantizer_state(model)
    assert restored.keys() == original.keys()
    for name, entry in original.items():
        assert torch.equal(restored[name]["scale"], entry["scale"])
        assert torch.equal(restored[name]["zero_point"], entry["zero_point"])


def test_weight_cache_follows_weight_updates():
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Linear(8, 4)), Placement(weight=QuantSpec(4, True, "channel")))
    layer = model[0]
    calibrate_weights(model)
    layer.input_quantizer.enabled = False
    x = torch.randn(3, 8)

    def expected():
        return x @ layer.weight_quantizer._fake_quantize(layer.weight.detach()).T + layer.bias

    with torch.no_grad():
        a = model(x)
        torch.testing.assert_close(a, expected())
        layer.weight.mul_(0.5)  # in-place update (bumps _version)
        torch.testing.assert_close(model(x), expected())
        layer.weight.data = layer.weight.data * 3  # GPTQ-style replacement of the data
        torch.testing.assert_close(model(x), expected())
        layer.weight_quantizer.set_range(-1.0, 1.0)  # new scale
        torch.testing.assert_close(model(x), expected())


def test_gradients_reach_weights_through_quantizers():
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Linear(8, 4)), Placement())
    calibrate_weights(model)
    model[0].input_quantizer.set_range(-10.0, 10.0)
    model(torch.randn(3, 8)).sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


def test_per_token_inputs_of_convolutions_are_per_time_step():
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Conv1d(3, 4, 3)), Placement(activation=QuantSpec(4, granularity="token")))
    conv = model[0]
    conv.weight_quantizer.enabled = False
    x = torch.randn(2, 3, 9)
    x[:, :, 4] *= 100  # one loud time step must not coarsen the others
    with torch.no_grad():
        out = model(x)
    rows = x.transpose(1, 2).reshape(-1, 3)  # one row of channels per time step
    scale = rows.abs().amax(dim=1, keepdim=True) / 7
    expected_input = (torch.clamp(torch.round(rows / scale), -8, 7) * scale).reshape(2, 9, 3).transpose(1, 2)
    torch.testing.assert_close(out, nn.functional.conv1d(expected_input, conv.weight, conv.bias))


def test_census_reports_calibrated_scales():
    model = quantize_model(nn.Sequential(nn.Linear(8, 4)), Placement(activation=QuantSpec(8, granularity="token")))
    calibrate_weights(model)
    text = census(model)
    assert "0.weight_quantizer weight 8b sym per-channel scale=[" in text and "x4" in text
    assert "0.input_quantizer activation 8b sym per-token dynamic" in text
    set_enabled(model, False)
    assert census(model).splitlines()[0].endswith(" off")
    assert re.fullmatch(r"2 quantizers \(1 weight, 1 activation\)", census(model).splitlines()[-1])


@pytest.mark.filterwarnings("ignore:.*meta parameter")
def test_scales_follow_the_model_device():
    # "meta" stands in for a GPU here: quantizers inserted into a moved model, ranges set from CPU floats and
    # CPU state dicts loaded into it all keep their buffers on the model's device
    model = quantize_model(nn.Sequential(nn.Linear(4, 4)).to("meta"), Placement())
    q = model[0].input_quantizer
    assert q.scale.device.type == "meta" and q.zero_point.device.type == "meta"
    q.set_range(-1.0, 2.0)
    assert q.scale.device.type == "meta" and q.scale.shape == ()
    cpu = Quantizer("0.input_quantizer", "activation", QuantSpec())
    cpu.set_range(-1.0, 1.0)
    model[0].input_quantizer.load_state_dict(cpu.state_dict())
    assert q.scale.device.type == "meta"
