"""Reading, validating, resampling and writing audio (esc.data.audio)."""

import numpy as np
import pytest
import soundfile as sf

from esc.data.audio import BadAudioError, load_audio, resample, write_flac


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def assert_bad(path, reason: str, **kwargs):
    with pytest.raises(BadAudioError, match=reason) as info:
        load_audio(path, 16000, **kwargs)
    assert str(path) in str(info.value)
    assert info.value.path == path


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x00\x00 this is not audio at all" * 10)
    assert_bad(path, "unreadable")


def test_truncated_flac(tmp_path):
    path = tmp_path / "cut.flac"
    write_flac(path, tone(1.0, 16000), 16000)
    path.write_bytes(path.read_bytes()[:30])
    assert_bad(path, "unreadable|no samples")


def test_empty_wav(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    assert_bad(path, "no samples")


def test_silent_wav(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    assert_bad(path, "silent")


def test_nan_and_inf_samples(tmp_path):
    for bad in (np.nan, np.inf):
        path = tmp_path / f"{bad}.wav"
        audio = tone(0.5, 16000)
        audio[100] = bad
        sf.write(path, audio, 16000, subtype="FLOAT")  # only float WAV can store NaN/Inf
        assert_bad(path, "NaN or Inf")


def test_unexpected_rate(tmp_path):
    path = tmp_path / "8k.wav"
    sf.write(path, tone(1.0, 8000), 8000)
    assert_bad(path, "8000 Hz, expected 16000 Hz", expected_rate=16000)
    assert load_audio(path, 16000, expected_rate=8000).shape == (16000,)


def test_stereo_error_and_mix(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = tone(1.0, 16000, 440), tone(1.0, 16000, 1000)
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    assert_bad(path, "2 channels", stereo="error")
    np.testing.assert_allclose(load_audio(path, 16000), (left + right) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="stereo"):
        load_audio(path, 16000, stereo="left")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "nope.wav", 16000)


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_resampling_length_and_content(tmp_path, rate):
    path = tmp_path / f"{rate}.wav"
    sf.write(path, tone(2.0, rate), rate, subtype="FLOAT")
    audio = load_audio(path, 16000)
    assert audio.dtype == np.float32 and audio.shape == (32000,)
    # Away from the edges the resampled tone is the same tone sampled at 16 kHz.
    np.testing.assert_allclose(audio[1000:-1000], tone(2.0, 16000)[1000:-1000], atol=2e-3)


def test_resample_identity_is_float32():
    audio = np.arange(10, dtype=np.float64)
    out = resample(audio, 16000, 16000)
    assert out.dtype == np.float32 and np.array_equal(out, audio)


def test_max_seconds_reads_a_prefix(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, tone(3.0, 8000), 8000, subtype="FLOAT")
    audio = load_audio(path, 16000, max_seconds=1.0)
    assert audio.shape == (16000,)
    np.testing.assert_allclose(audio[500:-500], tone(1.0, 16000)[500:-500], atol=2e-3)


def test_write_flac_round_trip_and_refusals(tmp_path):
    audio = tone(1.0, 16000)
    path = write_flac(tmp_path / "sub" / "a.flac", audio, 16000)
    assert sf.info(path).format == "FLAC" and sf.info(path).samplerate == 16000
    np.testing.assert_allclose(load_audio(path, 16000, expected_rate=16000), audio, atol=1 / 32768)
    with pytest.raises(BadAudioError, match="NaN"):
        write_flac(tmp_path / "nan.flac", np.full(100, np.nan, np.float32), 16000)
    with pytest.raises(ValueError, match="mono"):
        write_flac(tmp_path / "2d.flac", np.zeros((100, 2), np.float32), 16000)
