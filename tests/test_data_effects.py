"""Signal edits for synthetic clips (esc.data.effects)."""

import numpy as np
import pytest

from esc.data.effects import add_noise, fit_length, noise, prevent_clipping, trim_silence


def test_trim_silence_keeps_the_loud_part():
    audio = np.concatenate([np.zeros(100), np.ones(50), np.zeros(70)]).astype(np.float32)
    assert trim_silence(audio).size == 50


def test_fit_length_pads_and_crops():
    rng = np.random.default_rng(0)
    short = np.ones(10, np.float32)
    padded = fit_length(short, 100, rng)
    assert padded.shape == (100,) and padded.sum() == 10
    centered = fit_length(short, 100)
    assert np.flatnonzero(centered)[0] == 45
    long = np.arange(200, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(long, 100, rng), long[50:150])


@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_add_noise_hits_the_snr(kind, snr_db):
    rng = np.random.default_rng(1)
    speech = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32)
    noisy = add_noise(speech, kind, snr_db, rng)
    measured = 10 * np.log10(np.mean(speech**2) / np.mean((noisy - speech) ** 2))
    assert abs(measured - snr_db) < 0.01


def test_pink_noise_has_more_low_than_high_frequency_power():
    rng = np.random.default_rng(2)
    spectra = {k: np.abs(np.fft.rfft(noise(k, 16000, rng))) ** 2 for k in ("white", "pink")}
    low, high = slice(10, 200), slice(6000, 8000)
    assert spectra["pink"][low].mean() > 20 * spectra["pink"][high].mean()
    assert spectra["white"][low].mean() < 2 * spectra["white"][high].mean()
    with pytest.raises(ValueError):
        noise("brown", 10, rng)


def test_noise_is_reproducible_from_its_seed():
    a = noise("pink", 1000, np.random.default_rng(7))
    b = noise("pink", 1000, np.random.default_rng(7))
    assert np.array_equal(a, b) and not np.array_equal(a, noise("pink", 1000, np.random.default_rng(8)))


def test_prevent_clipping_only_scales_loud_audio():
    quiet = np.array([0.5, -0.2], np.float32)
    assert np.array_equal(prevent_clipping(quiet), quiet)
    assert np.max(np.abs(prevent_clipping(np.array([2.0, -1.0])))) == pytest.approx(0.99)
