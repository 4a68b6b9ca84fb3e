"""SmoothQuant and rotation: exact FP equivalence on every family; they lower what quantization sees."""

import pytest
import torch
from torch import nn

from conftest import FAMILIES
from esc.ptq.folds import fold_is_exact, head_rotation, module_output, rotate_channels, scale_channels
from esc.ptq.registry import build_stages
from esc.ptq.rotation import Rotation, random_orthogonal
from esc.ptq.smoothquant import SmoothQuant
from esc.quant.attention import is_attention_module
from ptq_helpers import ModuleAdapter
from run_helpers import compose_run

POST_LN = {"w2v_ctc"}  # a block norm's output also feeds the residual (only the last one feeds lm_head alone)


def build(family) -> ModuleAdapter:
    """The family's tiny model with random biases (they start at zero, where folding them would prove nothing)."""
    model = family.build()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    return ModuleAdapter(model)


def outputs(adapter, batches):
    with torch.no_grad():
        return [adapter.forward(b) for b in batches]


@pytest.mark.parametrize("stage", [SmoothQuant(alpha=[0.3, 0.6]), SmoothQuant(alpha=0.5), Rotation(),
                                   Rotation(convolutions=True), Rotation(queries_keys=True)],
                         ids=["smoothquant-search", "smoothquant-fixed", "rotation", "rotation-conv", "rotation-qk"])
def test_stage_keeps_the_fp_outputs(family, stage):
    adapter = build(family)
    batches = [family.batch(0), family.batch(1)]
    before = outputs(adapter, batches)
    params = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    report = stage.before_quantize(adapter, batches)
    for a, b in zip(outputs(adapter, batches), before):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    changed = {n for n, p in adapter.model.named_parameters() if not torch.equal(p, params[n])}
    if isinstance(stage, Rotation) or stage.search is False:
        assert changed and report["layers"]
    if isinstance(stage, Rotation):  # ungrouped convolutions with several input channels: only when asked
        convs = {n for n, m in adapter.model.named_modules()
                 if isinstance(m, nn.Conv1d) and m.groups == 1 and m.in_channels > 1}
        assert convs & set(report["layers"]) == (convs if stage.convolutions else set())
    # every attention module (Whisper: encoder, decoder self- and cross-attention) gets its value -> output fold
    attentions = {n for n, m in adapter.model.named_modules() if is_attention_module(m)}
    assert attentions and attentions == {n for n, e in report["layers"].items() if "value" in e}
    if isinstance(stage, Rotation):  # and, only when asked, its query and key fold, found by role
        for role, names in (("query", ("q_proj", "query")), ("key", ("k_proj", "key"))):
            entries = {n.removesuffix(f".{role}"): e[role] for n, e in report["layers"].items() if role in e}
            assert set(entries) == (attentions if stage.queries_keys else set())
            assert all(layer.rsplit(".", 1)[-1] in names for layer in entries.values())
    block_norms = [n for n, e in report["layers"].items() if ".layers." in n and "value" not in e]
    if family.name in POST_LN and isinstance(stage, SmoothQuant):
        assert "wav2vec2.encoder.layers.0.layer_norm" in report["skipped"]
        assert "wav2vec2.encoder.layers.0.layer_norm" not in report["layers"]
    else:
        assert block_norms


def test_smoothquant_tames_an_outlier_channel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 16))
    with torch.no_grad():
        model[0].weight[3] = 60.0  # one loud channel after the norm
    adapter = ModuleAdapter(model)
    batches = [{"input": torch.randn(64, 32)} for _ in range(2)]
    report = SmoothQuant(alpha=[0.25, 0.5, 0.75], a_bits=4).before_quantize(adapter, batches)
    entry = report["layers"]["0"]
    assert entry["consumers"] == ["1"] and entry["alpha"] is not None
    assert entry["error"] < 0.8 * entry["error_unsmoothed"]
    assert model[0].weight[3] < 60.0


def test_rotation_spreads_an_outlier_channel_and_is_orthogonal():
    q = random_orthogonal(16, torch.Generator().manual_seed(0))
    torch.testing.assert_close(q @ q.T, torch.eye(16))
    q = random_orthogonal(12, torch.Generator().manual_seed(0))
    torch.testing.assert_close(q @ q.T, torch.eye(12))
    model = nn.Sequential(nn.Linear(32, 8))
    x = torch.randn(64, 32)
    x[:, 5] *= 50
    report = Rotation().before_quantize(ModuleAdapter(model), [{"input": x}])
    entry = report["layers"]["0"]
    assert entry["peak_to_rms"] < 0.5 * entry["peak_to_rms_unrotated"]


def test_rotation_of_convolution_inputs_spreads_an_outlier_channel_and_keeps_the_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(32, 16, 3, stride=2, padding=1), nn.GELU(), nn.Conv1d(16, 16, 3, groups=4))
    x = torch.randn(4, 32, 50)
    x[:, 5] *= 50
    with torch.no_grad():
        before = model(x)
    assert Rotation().before_quantize(ModuleAdapter(model), [{"input": x}])["layers"] == {}  # off by default
    report = Rotation(convolutions=True).before_quantize(ModuleAdapter(model), [{"input": x}])["layers"]
    assert set(report) == {"0"}  # the grouped convolution is left alone
    assert report["0"]["peak_to_rms"] < 0.5 * report["0"]["peak_to_rms_unrotated"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)
    one_channel = nn.Sequential(nn.Conv1d(1, 8, 5))  # a waveform: nothing to spread
    assert Rotation(convolutions=True).before_quantize(ModuleAdapter(one_channel),
                                                       [{"input": torch.randn(2, 1, 40)}])["layers"] == {}


def test_query_key_rotation_spreads_an_outlier_key_channel():
    adapter = build(FAMILIES["whisper"])
    attention = adapter.model.model.encoder.layers[0].self_attn
    with torch.no_grad():  # one loud key channel (a common pattern of trained attention)
        attention.k_proj.weight[3] *= 40.0
    report = Rotation(queries_keys=True).before_quantize(adapter, [FAMILIES["whisper"].batch(0)])["layers"]
    entry = report["model.encoder.layers.0.self_attn.key"]
    assert entry["peak_to_rms"] < 0.5 * entry["peak_to_rms_unrotated"]


def test_alpha_is_validated():
    with pytest.raises(ValueError, match="alpha"):
        SmoothQuant(alpha=1.5)
    with pytest.raises(ValueError, match="alpha"):
        SmoothQuant(alpha=[])



def value_output_params(model: nn.Module) -> set[str]:
    """The value projections' weights and biases and the output projections' weights, by the names the three
    families give them."""
    names = set()
    for name, m in model.named_modules():
        if is_attention_module(m):
            out = "out_proj" if hasattr(m, "out_proj") else "o_proj"
            names |= {f"{name}.v_proj.weight", f"{name}.v_proj.bias", f"{name}.{out}.weight"}
    return names


@pytest.mark.parametrize("stage_class, options", [(SmoothQuant, {"alpha": 0.5}), (Rotation, {"match": []})],
                         ids=["smoothquant", "rotation"])
def test_value_output_folds_only_when_switched_on(family, stage_class, options):
    for on in (True, False):
        adapter = build(family)
        batches = [family.batch(0), family.batch(1)]
        before = outputs(adapter, batches)
        params = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
        stage_class(**options, value_output=on).before_quantize(adapter, batches)
        for a, b in zip(outputs(adapter, batches), before):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        changed = {n for n, p in adapter.model.named_parameters() if not torch.equal(p, params[n])}
        folded = value_output_params(adapter.model)
        only_folded = {n for n in folded if not n.endswith("v_proj.weight")}  # SmoothQuant's norms scale v's columns
        assert only_folded <= changed if on else not only_folded & changed
        if stage_class is Rotation:  # no Linear matched: the value fold is all that changes
            assert changed == (folded if on else set())


def planted_whisper():
    """Tiny Whisper (random biases) whose decoder cross-attention has one loud value channel (a large weight row
    and offset: the attention's averaging over frames would cancel a loud zero-mean channel)."""
    adapter = build(FAMILIES["whisper"])
    attention = adapter.model.get_submodule("model.decoder.layers.0.encoder_attn")
    with torch.no_grad():
        attention.v_proj.weight[5] *= 50
        attention.v_proj.bias[5] = 10.0
    return adapter, attention, [FAMILIES["whisper"].batch(0), FAMILIES["whisper"].batch(1)]


def channel_peaks(adapter, batches, layer) -> torch.Tensor:
    """Per-channel max|x| of the layer's input over the batches."""
    peaks = []
    handle = layer.register_forward_pre_hook(lambda m, args: peaks.append(args[0].abs().flatten(0, -2).amax(0)))
    outputs(adapter, batches)
    handle.remove()
    return torch.stack(peaks).amax(0)


def test_smoothquant_tames_a_planted_outlier_at_the_output_projection():
    adapter, attention, batches = planted_whisper()
    peaks = channel_peaks(adapter, batches, attention.out_proj)
    assert peaks.max() / peaks.median() > 20
    before = outputs(adapter, batches)
    report = SmoothQuant(alpha=0.5, a_bits=6).before_quantize(adapter, batches)
    smoothed = channel_peaks(adapter, batches, attention.out_proj)
    assert smoothed.max() / smoothed.median() < 0.2 * peaks.max() / peaks.median()
    entry = report["layers"]["model.decoder.layers.0.encoder_attn"]
    assert entry["consumers"] == ["model.decoder.layers.0.encoder_attn.out_proj"] and entry["alpha"] == 0.5
    assert entry["error"] < 0.5 * entry["error_unsmoothed"]
    for a, b in zip(outputs(adapter, batches), before):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_rotation_spreads_a_planted_value_outlier_over_its_head():
    adapter, attention, batches = planted_whisper()
    peaks = channel_peaks(adapter, batches, attention.out_proj)
    report = Rotation(match=[]).before_quantize(adapter, batches)
    entry = report["layers"]["model.decoder.layers.0.encoder_attn"]
    assert entry["value"] == "model.decoder.layers.0.encoder_attn.v_proj"
    assert entry["peak_to_rms"] < 0.5 * entry["peak_to_rms_unrotated"]
    assert channel_peaks(adapter, batches, attention.out_proj).max() < 0.4 * peaks.max()  # spread over its head


def test_only_the_value_projection_folds_exactly_and_only_head_by_head():
    adapter = build(FAMILIES["whisper"])
    batch = FAMILIES["whisper"].batch(0)
    attention = adapter.model.get_submodule("model.decoder.layers.1.encoder_attn")
    out, g = attention.out_proj, torch.Generator().manual_seed(0)
    with torch.no_grad():
        reference, logits = module_output(adapter, batch, attention), adapter.forward(batch)

        def exact(source, rotation):
            params = [source.weight, source.bias, out.weight]
            return fold_is_exact(lambda: module_output(adapter, batch, attention), reference, params, lambda: (
                scale_channels(source, [out], torch.rand(32, generator=g) + 0.5),
                rotate_channels(source, [out], rotation)))

        assert exact(attention.v_proj, head_rotation(32, attention.head_dim, g))
        assert not exact(attention.k_proj, head_rotation(32, attention.head_dim, g))
        assert not exact(attention.v_proj, random_orthogonal(32, g))  # mixes the two heads
        assert torch.equal(adapter.forward(batch), logits)  # the check restored the parameters


@pytest.mark.parametrize("option", ["smoothquant", "rotation"])
def test_the_value_output_key_reaches_the_stage(option):
    for on in (True, False):
        [stage] = build_stages(compose_run(f"ptq={option}", f"ptq.stages.0.value_output={on}").ptq.stages)
        adapter, attention, batches = planted_whisper()
        bias = attention.v_proj.bias.detach().clone()  # only the value fold changes it
        stage.before_quantize(adapter, batches)
        assert torch.equal(attention.v_proj.bias, bias) != on
