"""Placement rules (esc.quant.placement) on their own and applied to tiny models."""

import logging

import pytest
import torch

from conftest import FAMILIES
from esc.calib.registry import make_calibrator
from esc.quant.model import census, quantize_model, quantizers, set_enabled
from esc.quant.placement import Placement, Rule
from esc.quant.spec import QuantSpec


def test_rules_apply_in_order_later_ones_win():
    p = Placement(rules=[Rule.from_dict({"match": "*", "bits": 4}),
                         Rule.from_dict({"match": "enc.*", "bits": 6, "symmetric": False})])
    assert p.spec_for("enc.fc.input_quantizer", "activation") == QuantSpec(6, False, "tensor")
    assert p.spec_for("dec.fc.input_quantizer", "activation") == QuantSpec(4, True, "tensor")
    assert p.spec_for("dec.fc.weight_quantizer", "weight") == QuantSpec(4, True, "channel")


def test_disabling_the_classifier_leaves_the_head_without_active_quantizers():
    fam = FAMILIES["ast"]
    model = quantize_model(fam.build(), Placement(rules=[Rule.from_dict({"match": "*classifier*",
                                                                         "enabled": False})]))
    head = [q for q in quantizers(model) if q.name.startswith("classifier.")]
    assert {q.name for q in head} == {"classifier.dense.weight_quantizer", "classifier.dense.input_quantizer"}
    set_enabled(model, True)  # switching everything on keeps spec-disabled quantizers off
    assert not any(q.enabled for q in head)
    assert all(q.enabled for q in quantizers(model) if not q.name.startswith("classifier."))
    make_calibrator("minmax").calibrate(model, lambda m: m(**fam.batch(1)))
    assert not any(q.is_calibrated for q in head)  # and calibration leaves them alone
    with torch.no_grad():
        model(**fam.batch(2))  # still runs: the head computes in FP
    assert all(line.endswith(" off") for line in census(model).splitlines() if line.startswith("classifier."))


def test_first_layer_rule_sets_eight_bits_over_a_four_bit_default():
    fam = FAMILIES["whisper"]
    placement = Placement(weight=QuantSpec(4, True, "channel"), activation=QuantSpec(4),
                          rules=[Rule.from_dict({"match": "model.encoder.conv1.*", "bits": 8})])
    model = quantize_model(fam.build(), placement)
    eight = {q.name for q in quantizers(model) if q.bits == 8}
    assert eight == {"model.encoder.conv1.weight_quantizer", "model.encoder.conv1.input_quantizer"}
    assert all(q.bits == 4 for q in quantizers(model) if q.name not in eight)
    assert model.model.encoder.conv1.weight_quantizer.spec.granularity == "channel"


@pytest.mark.parametrize("preset", ["w4a8_g64", "w4a4_g64"])
def test_group_presets_keep_the_first_and_last_weights_at_eight_bits_per_channel(family, preset):
    from run_helpers import compose_run
    from omegaconf import OmegaConf

    cfg = compose_run(f"quant={preset}")
    model = quantize_model(family.build(), Placement.from_config(OmegaConf.to_container(cfg.quant, resolve=True)))
    weights = {q.name: q.spec for q in quantizers(model, "weight")}
    eight = {name for name, spec in weights.items() if spec.bits == 8}
    assert eight and all(weights[name].granularity == "channel" for name in eight)
    assert all(s.bits == 4 and s.granularity == "group" and s.group_size == 64
               for name, s in weights.items() if name not in eight)
    first = {"whisper": "model.encoder.conv1.weight_quantizer"}.get(family.name)
    if first:
        assert first in eight and "proj_out.weight_quantizer" in eight
    assert len(eight) <= 3
    assert all(q.bits == int(preset[-5]) for q in quantizers(model, "activation"))


def test_rule_matching_nothing_warns_with_its_pattern(caplog):
    rules = [Rule.from_dict({"match": "*.nonexistent_layer.*", "bits": 4}),
             Rule.from_dict({"match": "*.other_family_layer.*", "bits": 8, "optional": True}),
             Rule.from_dict({"match": "*classifier*", "enabled": False})]
    with caplog.at_level(logging.WARNING, logger="esc.quant.placement"):
        quantize_model(FAMILIES["ast"].build(), Placement(rules=rules))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "*.nonexistent_layer.*" in warnings[0]


def test_rule_with_unknown_field_raises():
    with pytest.raises(ValueError, match="bitz"):
        Rule.from_dict({"match": "*", "bitz": 4})
    with pytest.raises(ValueError, match="match"):
        Rule.from_dict({"bits": 4})
    with pytest.raises(ValueError, match="bitz"):
        Placement.from_config({"rules": [{"match": "*", "bitz": 4}]})
    with pytest.raises(ValueError, match="activations"):
        Placement.from_config({"activations": {"bits": 4}})


def test_rule_with_bad_value_fails_before_the_model_is_touched():
    model = FAMILIES["ast"].build()
    rules = [Rule.from_dict({"match": "*attention.probs_quantizer", "bits": 9})]
    with pytest.raises(ValueError, match=r"layers\.0\.attention\.probs_quantizer.*9 bits"):
        quantize_model(model, Placement(rules=rules))
    assert not list(quantizers(model))
    assert type(model.classifier.dense).__name__ == "Linear"


def test_from_config_builds_specs_and_rules():
    p = Placement.from_config(
        {"name": "w4a8", "weight": {"bits": 4}, "activation": {"bits": 8, "granularity": "token"},
         "attention": False, "rules": [{"match": "*.probs_quantizer", "symmetric": False}]},
        extra_rules=[{"match": "*classifier*", "enabled": False}])
    # a partial weight spec keeps the per-channel default granularity
    assert p.weight == QuantSpec(4, True, "channel")
    assert p.activation == QuantSpec(8, True, "token")
    assert p.attention is False
    assert [r.match for r in p.rules] == ["*.probs_quantizer", "*classifier*"]
    assert Placement.from_config({}).weight == Placement().weight
    with pytest.raises(ValueError, match="default weight"):
        Placement.from_config({"weight": {"bits": 17}})


def test_token_rule_makes_attention_inputs_dynamic():
    fam = FAMILIES["w2v_ctc"]
    rules = [Rule.from_dict({"match": f"*attention.{t}_quantizer", "granularity": "token"})
             for t in ("query", "key", "value")]
    rules.append(Rule.from_dict({"match": "*attention.probs_quantizer", "symmetric": False}))
    model = quantize_model(fam.build(), Placement(rules=rules))
    attn = model.wav2vec2.encoder.layers[0].attention
    assert attn.query_quantizer.is_dynamic and attn.value_quantizer.is_dynamic
    assert not attn.probs_quantizer.is_dynamic and not attn.probs_quantizer.spec.symmetric
    assert not attn.q_proj.input_quantizer.is_dynamic
    fp = fam.build()
    batch = fam.batch(0)
    make_calibrator("minmax").calibrate(model, lambda m: m(**batch))
    assert attn.probs_quantizer.zero_point.item() == 0  # non-negative data: the unsigned grid starts at zero
    with torch.no_grad():
        out, ref = model(**batch).logits, fp(**batch).logits
    assert 0 < (out - ref).norm() / ref.norm() < 0.2
