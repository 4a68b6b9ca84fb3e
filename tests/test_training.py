"""Training small classifiers (esc.train, esc.training, esc.augment) and loading bundled checkpoints."""

from __future__ import annotations

import csv
import json
from dataclasses import fields

import pytest
import torch
import yaml
from audio_folders import LABELS, tone, write_folder
from run_helpers import CONF
from safetensors.torch import load_file
from training_helpers import NO_AUGMENT, compose_train, train_tiny

from esc.augment import AugmentConfig, augment_batch, low_shelf, mask, stretch
from esc.models.base import CheckpointError
from esc.models.frontend import highpass_cutoff
from esc.models.registry import build_adapter
from esc.train import accuracy_by_voice

def test_training_writes_a_checkpoint_that_loads_as_pretrained(tmp_path):
    metrics, weights = train_tiny(tmp_path)
    out = tmp_path / "out"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["val_accuracy"] == metrics["val_accuracy"] and 0.0 <= saved["val_accuracy"] <= 1.0
    assert saved["n_train"] == 8 and saved["n_val"] == 4 and saved["command"] == "python -m esc.train ..."
    assert saved["scores"]["asterisk"]["n"] == 4
    adapter = build_adapter({"family": "ast", "task": "classification", "source": "pretrained", "path": str(out)})
    assert adapter.labels == list(LABELS)
    # Saving what was loaded gives back the trained weights (transformers renames modules on load, not on save).
    adapter.model.save_pretrained(tmp_path / "again")
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert again.keys() == weights.keys() and all(torch.equal(again[k], weights[k]) for k in weights)
    # The trained weights moved away from a fresh random initialisation of the same config.
    fresh = build_adapter(yaml.safe_load((CONF / "model" / "ast_tiny.yaml").read_text())).model.state_dict()
    assert not torch.equal(fresh["classifier.dense.weight"], weights["classifier.dense.weight"])
    predictions = adapter.predict(adapter.collate([tone(1), tone(2)]))
    assert set(predictions) <= set(LABELS)


def test_scores_per_voice_from_the_metadata(tmp_path):
    data = write_folder(tmp_path / "data", n_calibration=8, n_evaluation=6)
    metadata = data / "evaluation" / "metadata.csv"
    rows = list(csv.DictReader(metadata.open()))
    with metadata.open("w", newline="") as f:  # two voices, as the generated sets name them
        writer = csv.DictWriter(f, ["file_name", "label", "voice"])
        writer.writeheader()
        writer.writerows({**r, "voice": "ab"[i % 2]} for i, r in enumerate(rows))
    metrics, _ = train_tiny(tmp_path)
    heldout, asterisk = metrics["scores"]["heldout"], metrics["scores"]["asterisk"]
    assert heldout["accuracy"] == pytest.approx(metrics["val_accuracy"])
    labels = {r["file_name"]: r["label"] for r in rows}
    for voice, first in (("a", 0), ("b", 1)):
        names = [r["file_name"] for r in rows[first::2]]
        expected = sum(heldout["predictions"][n] == labels[n] for n in names) / len(names)
        assert heldout["by_voice"][voice] == pytest.approx(expected)
    assert asterisk["by_voice"] == heldout["by_voice"]  # score_on points at the same split here
    assert accuracy_by_voice(data / "calibration", {"cal0.wav": "yes"}) is None  # no voice column


@pytest.mark.parametrize("override", ["augment.speed=0.3", "augment.mel_warp=0.3", "augment.time_masks=2",
                                      "label_smoothing=0.3", "mixup=0.4"])
def test_training_keys_reach_the_code(tmp_path, override):
    _, plain = train_tiny(tmp_path, *NO_AUGMENT)
    _, changed = train_tiny(tmp_path, *NO_AUGMENT, override, "augment.time_mask_width=0.3")
    assert not torch.equal(plain["classifier.dense.weight"], changed["classifier.dense.weight"])


def test_low_shelf_reaches_waveform_training(tmp_path):
    _, plain = train_tiny(tmp_path, *NO_AUGMENT, model="wav2vec2_kws_tiny")
    _, changed = train_tiny(tmp_path, *NO_AUGMENT, "augment.low_shelf=12", model="wav2vec2_kws_tiny")
    assert plain.keys() == changed.keys()
    assert any(not torch.equal(plain[k], changed[k]) for k in plain)


def test_a_highpass_front_end_is_trained_behind_and_saved_with_the_checkpoint(tmp_path):
    _, plain = train_tiny(tmp_path, *NO_AUGMENT)
    _, filtered = train_tiny(tmp_path, *NO_AUGMENT, "model.highpass_hz=300")
    assert not torch.equal(plain["classifier.dense.weight"], filtered["classifier.dense.weight"])
    saved = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert saved["esc_highpass_hz"] == 300.0


def test_train_config_augment_keys_are_the_augment_fields():
    assert set(compose_train("dataset.path=x").augment) == {f.name for f in fields(AugmentConfig)}


def _spectrograms():
    return {"input_values": torch.randn(3, 40, 16, generator=torch.Generator().manual_seed(0)),
            "labels": torch.tensor([0, 1, 2])}


def test_zero_augmentation_leaves_inputs_unchanged():
    batch = _spectrograms()
    out = augment_batch(batch, AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(out["input_values"], batch["input_values"]) and torch.equal(out["labels"], batch["labels"])


@pytest.mark.parametrize("key, value", [("time_shift", 0.2), ("speed", 0.3), ("mel_warp", 0.3),
                                        ("time_masks", 2), ("freq_masks", 2)])
def test_each_augmentation_changes_spectrograms(key, value):
    cfg = AugmentConfig(time_mask_width=0.3, freq_mask_width=0.3, **{key: value})
    batch = _spectrograms()
    out = augment_batch(batch, cfg, torch.Generator().manual_seed(0))
    assert out["input_values"].shape == batch["input_values"].shape
    assert not torch.equal(out["input_values"], batch["input_values"])
    assert torch.equal(out["labels"], batch["labels"])


def test_frequency_augmentation_leaves_waveforms_and_masks_alone():
    waves = {"input_values": torch.randn(2, 100), "attention_mask": torch.ones(2, 100, dtype=torch.int32)}
    cfg = AugmentConfig(mel_warp=0.5, freq_masks=3, freq_mask_width=0.5)
    out = augment_batch(waves, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(out["input_values"], waves["input_values"])
    sped = augment_batch(waves, AugmentConfig(speed=0.5), torch.Generator().manual_seed(0))
    assert not torch.equal(sped["input_values"], waves["input_values"])
    assert torch.equal(sped["attention_mask"], waves["attention_mask"])


def test_low_shelf_moves_the_low_band_against_the_high_one_and_keeps_the_level():
    t = torch.arange(16000, dtype=torch.float64) / 16000
    tone = lambda hz: torch.sin(2 * torch.pi * hz * t)  # noqa: E731
    x = (tone(100) + tone(3000)).float().repeat(64, 1)
    out = low_shelf(x, 12.0, torch.Generator().manual_seed(0))

    def amplitude(y, hz):
        return torch.fft.rfft(y.double(), dim=1).abs()[:, hz] / 8000  # 1-s clips: bin k is k Hz

    # The level is renormalised, so the shelf shows in the ratio of the two tones.
    ratio = amplitude(out, 100) / amplitude(out, 3000)
    change_db = 20 * torch.log10(ratio / (amplitude(x, 100) / amplitude(x, 3000)))
    assert change_db.abs().max() <= 12.0 + 1e-3 and change_db.max() > 6 and change_db.min() < -6
    assert torch.allclose(out.std(1), x.std(1), rtol=1e-4) and torch.allclose(out.mean(1), x.mean(1), atol=1e-5)
    spectrograms = _spectrograms()
    untouched = augment_batch(spectrograms, AugmentConfig(low_shelf=12.0), torch.Generator().manual_seed(0))
    assert torch.equal(untouched["input_values"], spectrograms["input_values"])  # waveforms only
    waves = {"input_values": x[:2]}
    assert not torch.equal(augment_batch(waves, AugmentConfig(low_shelf=12.0), torch.Generator())["input_values"],
                           waves["input_values"])


def test_stretch_reads_scaled_positions():
    x = torch.arange(6, dtype=torch.float32).view(1, 6)
    assert torch.equal(stretch(x, 1, torch.tensor([1.0])), x)
    assert torch.allclose(stretch(x, 1, torch.tensor([2.0])), torch.tensor([[0.0, 2, 4, 5, 5, 5]]))
    assert torch.allclose(stretch(x, 1, torch.tensor([0.5])), torch.tensor([[0.0, 0.5, 1, 1.5, 2, 2.5]]))


def test_mask_fills_bands_with_the_example_mean():
    x = torch.arange(20, dtype=torch.float32).view(1, 20) + 1.0
    out = mask(x, 1, count=1, width=0.5, generator=torch.Generator().manual_seed(3))
    changed = out != x
    assert changed.any() and changed.sum() <= 10
    assert torch.all(out[changed] == x.mean())


BUNDLED_KEYWORD_MODELS = sorted(p.stem for p in (CONF / "model").glob("*_kws*.yaml")
                                if yaml.safe_load(p.read_text())["source"] == "bundled")


@pytest.mark.parametrize("name", BUNDLED_KEYWORD_MODELS)
def test_bundled_model_loads_and_classifies(name):
    adapter = build_adapter(yaml.safe_load((CONF / "model" / f"{name}.yaml").read_text()))
    keywords = yaml.safe_load((CONF / "model" / "ast_kws_scratch.yaml").read_text())["labels"]
    assert adapter.labels == keywords and len(keywords) == 35
    predictions = adapter.predict(adapter.collate([tone(i, seconds=1.0) for i in range(3)]))
    assert len(predictions) == 3 and set(predictions) <= set(keywords)
    # The checkpoint trained behind a front-end filter brings its cutoff; the others have none.
    assert highpass_cutoff(adapter.processor) == (300.0 if "_hp" in name else None)


def test_the_bundled_keyword_models_are_found():
    assert {"ast_kws", "wav2vec2_kws", "ast_kws_360", "wav2vec2_kws_360", "wav2vec2_kws_360_hp"} <= set(
        BUNDLED_KEYWORD_MODELS)


def test_missing_bundled_model_names_the_bundled_ones():
    with pytest.raises(CheckpointError, match=r"no bundled model 'nope'.*ast_kws"):
        build_adapter({"family": "ast", "task": "classification", "source": "bundled", "path": "nope"})


def test_mixup_draws_from_the_training_seed_not_the_global_rng():
    from esc.training import ClassifierTraining

    adapter = build_adapter(yaml.safe_load((CONF / "model" / "ast_tiny.yaml").read_text()))
    # Six clips: with three, both seeds' permutations can be the identity (they are, for 7 and 8), a no-op mixup.
    batch = adapter.collate([tone(i) for i in range(1, 7)], [LABELS[i % len(LABELS)] for i in range(6)])
    losses = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        training = ClassifierTraining(adapter, lr=1e-3, weight_decay=0.0, mixup=0.4, seed=7)
        losses.append(float(training.training_step(dict(batch), 0)))
    assert losses[0] == losses[1]
    other = ClassifierTraining(adapter, lr=1e-3, weight_decay=0.0, mixup=0.4, seed=8)
    assert float(other.training_step(dict(batch), 0)) != losses[0]
