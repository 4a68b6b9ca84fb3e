"""Spectral-tilt augmentation (log-mel inputs) and the weight average (`ema_decay`) of esc.train."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from audio_folders import tone
from run_helpers import seeded_model
from training_helpers import NO_AUGMENT, compose_train, train_tiny

from esc.augment import AugmentConfig, augment_batch, tilt
from esc.models.registry import build_adapter
from esc.train import train


def test_tilt_adds_a_centred_line_across_the_mel_axis_within_the_set_range():
    x = torch.randn(64, 10, 16, generator=torch.Generator().manual_seed(0))
    gain = tilt(x, 12.0, 0.5, torch.Generator().manual_seed(0)) - x  # 0.5 input units per dB
    assert torch.allclose(gain, gain[:, :1, :].expand_as(gain), atol=1e-5)  # the same at every frame
    line = gain[:, 0, :]
    steps = line.diff(dim=1)
    assert torch.allclose(steps, steps[:, :1].expand_as(steps), atol=1e-5)  # straight
    assert torch.allclose(line.mean(1), torch.zeros(64), atol=1e-5)  # centred: the mean level stays
    span_db = (line[:, -1] - line[:, 0]) / 0.5
    assert span_db.abs().max() <= 12.0 + 1e-4 and span_db.max() > 6 and span_db.min() < -6  # both ways


def test_tilt_in_a_batch_needs_the_units_and_leaves_waveforms_alone():
    spectrograms = {"input_values": torch.randn(2, 10, 16)}
    with pytest.raises(ValueError, match="augment.tilt"):
        augment_batch(spectrograms, AugmentConfig(tilt=12.0), torch.Generator())
    waves = {"input_values": torch.randn(2, 100)}
    out = augment_batch(waves, AugmentConfig(tilt=12.0), torch.Generator(), units_per_db=0.5)
    assert torch.equal(out["input_values"], waves["input_values"])


def test_ast_units_per_db_match_its_feature_extractor():
    adapter = seeded_model("ast_tiny")
    audio = tone(3, seconds=1.0)
    louder = audio * np.float32(10 ** (6.0 / 20))  # +6 dB of power in every band
    quiet = adapter.features([audio])["input_values"]
    shift = adapter.features([louder])["input_values"] - quiet
    frames = quiet.shape[1]
    voiced = shift[0, : int(0.9 * frames)]  # the clip's frames, not the padding after it
    assert voiced.median().item() == pytest.approx(6.0 * adapter.log_mel_units_per_db, rel=0.02)
    assert seeded_model("wav2vec2_kws_tiny").log_mel_units_per_db is None


def test_tilt_reaches_training_and_is_refused_for_waveform_models(tmp_path):
    _, plain = train_tiny(tmp_path, *NO_AUGMENT)
    _, tilted = train_tiny(tmp_path, *NO_AUGMENT, "augment.tilt=12")
    assert not torch.equal(plain["classifier.dense.weight"], tilted["classifier.dense.weight"])
    with pytest.raises(ValueError, match=r"augment.tilt.*wav2vec2"):
        train_tiny(tmp_path, *NO_AUGMENT, "augment.tilt=12", model="wav2vec2_kws_tiny")


def test_the_saved_weights_are_the_average(tmp_path):
    # With a decay this close to 1 the average stays at its first value, the weights after the first step, so the
    # saved model sits much nearer its initialisation than the plain run's does after all sixteen steps.
    _, plain = train_tiny(tmp_path, *NO_AUGMENT, "epochs=8")
    metrics, averaged = train_tiny(tmp_path, *NO_AUGMENT, "epochs=8", "ema_decay=0.99999")
    L.seed_everything(0)  # what esc.train does before it builds the model
    init = build_adapter(dict(compose_train("model=ast_tiny", "dataset.path=x").model)).model.state_dict()
    key = "classifier.dense.weight"
    plain_move, ema_move = (plain[key] - init[key]).norm(), (averaged[key] - init[key]).norm()
    assert 0 < ema_move < 0.5 * plain_move, (ema_move, plain_move)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_an_out_of_range_decay_is_refused_before_training(tmp_path, decay):
    with pytest.raises(ValueError, match="ema_decay"):
        train(compose_train("dataset.path=/nonexistent", f"ema_decay={decay}"))
