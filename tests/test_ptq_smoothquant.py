"""SmoothQuant and rotation: exact FP equivalence on every family; they lower what quantization sees."""

import pytest
import torch
from torch import nn

from esc.ptq.rotation import Rotation, random_orthogonal
from esc.ptq.smoothquant import SmoothQuant
from ptq_helpers import ModuleAdapter

POST_LN = {"w2v_ctc"}  # a block norm's output also feeds the residual (only the last one feeds lm_head alone)


def outputs(adapter, batches):
    with torch.no_grad():
        return [adapter.forward(b) for b in batches]


@pytest.mark.parametrize("stage", [SmoothQuant(alpha=[0.3, 0.6]), SmoothQuant(alpha=0.5), Rotation()],
                         ids=["smoothquant-search", "smoothquant-fixed", "rotation"])
def test_stage_keeps_the_fp_outputs(family, stage):
    adapter = ModuleAdapter(family.build())
    batches = [family.batch(0), family.batch(1)]
    before = outputs(adapter, batches)
    params = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    report = stage.before_quantize(adapter, batches)
    for a, b in zip(outputs(adapter, batches), before):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    changed = {n for n, p in adapter.model.named_parameters() if not torch.equal(p, params[n])}
    if isinstance(stage, Rotation) or stage.search is False:
        assert changed and report["layers"]
    block_norms = [n for n in report["layers"] if ".layers." in n]
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


def test_alpha_is_validated():
    with pytest.raises(ValueError, match="alpha"):
        SmoothQuant(alpha=1.5)
    with pytest.raises(ValueError, match="alpha"):
        SmoothQuant(alpha=[])
