"""`calibrator=saved`: an earlier run's scales instead of a calibration pass."""

import pytest
import torch

from conftest import FAMILIES
from esc.calib.mse import MSECalibrator
from esc.calib.saved import SavedScalesCalibrator
from esc.quant.model import quantize_model, quantizers, save_scales
from esc.quant.placement import Placement

TOKEN_W4A4 = {"weight": {"bits": 4}, "activation": {"bits": 4},
              "rules": [{"match": "*.input_quantizer", "granularity": "token", "symmetric": False}]}


def quantized(placement: dict = TOKEN_W4A4):
    family = FAMILIES["whisper"]
    model = family.build()
    quantize_model(model, Placement.from_config(placement))
    return family, model


def no_data(model):
    raise AssertionError("calibrator=saved must not run the calibration data")


def test_loaded_scales_and_clip_ratios_give_the_same_model(tmp_path):
    family, model = quantized()
    batch = family.batch(1)
    MSECalibrator().calibrate(model, lambda m: m(**batch))
    assert any(q.is_dynamic and q.scale.item() < 1.0 for q in quantizers(model))  # MSE chose clip ratios
    path = save_scales(model, tmp_path / "scales.pt")
    _, other = quantized()
    SavedScalesCalibrator(str(path)).calibrate(other, no_data)
    for a, b in zip(quantizers(model), quantizers(other)):
        assert torch.equal(a.scale, b.scale) and torch.equal(a.zero_point, b.zero_point), a.name
    with torch.no_grad():
        torch.testing.assert_close(other(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_a_missing_file_or_quantizer_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="calibrator.path: no scales file"):
        SavedScalesCalibrator(str(tmp_path / "absent.pt"))
    family, model = quantized({"weight": {"bits": 8}, "activation": {"bits": 8}, "attention": False})
    MSECalibrator().calibrate(model, lambda m: m(**family.batch(1)))
    path = save_scales(model, tmp_path / "no_attention.pt")
    _, other = quantized({"weight": {"bits": 8}, "activation": {"bits": 8}})  # attention quantizers too
    with pytest.raises(ValueError, match=r"no scales for \d+ activation quantizer.*query_quantizer"):
        SavedScalesCalibrator(str(path)).calibrate(other, no_data)
