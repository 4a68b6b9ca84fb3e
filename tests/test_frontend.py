"""The checkpoint's front-end high-pass (esc.models.frontend): the filter, the option, saving and loading it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from esc.models.frontend import HIGHPASS_KEY, highpass
from esc.models.registry import build_adapter
from run_helpers import seeded_model

RATE = 16000


def two_tones(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * 100 * t) + 0.1 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32)


def tone_level(audio: np.ndarray, hz: float) -> float:
    """Amplitude of the `hz` component over the second half (the filter's onset transient gone)."""
    half = audio[audio.size // 2:]
    t = np.arange(half.size) / RATE
    return float(2 * abs(np.mean(half * np.exp(-2j * np.pi * hz * t))))


def test_highpass_removes_the_low_band_and_keeps_the_high_one():
    out = highpass(two_tones(), 300.0, RATE)
    assert out.dtype == np.float32 and out.shape == (RATE,)
    assert tone_level(out, 100) < 0.5 * 10 ** (-35 / 20)  # 4th order, 1.6 octaves below the cutoff: about -38 dB
    assert tone_level(out, 2000) == pytest.approx(0.1, rel=0.01)


@pytest.mark.parametrize("name", ["ast_tiny", "wav2vec2_kws_tiny", "wav2vec2_ctc_tiny", "whisper_tiny"])
def test_the_option_reaches_every_adapter_input(name):
    plain, filtered = seeded_model(name), seeded_model(name, highpass_hz=300)
    audio = [two_tones()]
    assert torch.equal(plain.collate(audio)[_input(plain)], plain.collate(audio)[_input(plain)])
    assert not torch.allclose(plain.collate(audio)[_input(plain)], filtered.collate(audio)[_input(plain)], atol=1e-3)
    # Filtering by hand first and then running the plain adapter gives the filtered adapter's input exactly.
    by_hand = plain.collate([highpass(audio[0], 300.0, RATE)])[_input(plain)]
    assert torch.equal(by_hand, filtered.collate(audio)[_input(plain)])


def _input(adapter) -> str:
    return "input_features" if adapter.family == "whisper" else "input_values"


def test_the_cutoff_is_saved_with_the_checkpoint_and_can_be_overridden(tmp_path):
    trained = seeded_model("ast_tiny", highpass_hz=250)
    trained.model.save_pretrained(tmp_path)
    trained.processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())[HIGHPASS_KEY] == 250.0
    source = {"family": "ast", "task": "classification", "source": "pretrained", "path": str(tmp_path)}
    batch = trained.collate([two_tones()])
    assert torch.equal(build_adapter(source).collate([two_tones()])["input_values"], batch["input_values"])
    kept = build_adapter(source | {"highpass_hz": None})
    assert torch.allclose(kept.forward(batch), trained.forward(batch), atol=1e-6)
    removed = build_adapter(source | {"highpass_hz": 0}).collate([two_tones()])["input_values"]
    assert torch.equal(removed, seeded_model("ast_tiny").collate([two_tones()])["input_values"])


@pytest.mark.parametrize("cutoff", [-1, 8000, 12000])
def test_a_cutoff_out_of_range_is_refused_naming_the_option(cutoff):
    with pytest.raises(ValueError, match="model.highpass_hz"):
        seeded_model("ast_tiny", highpass_hz=cutoff)
