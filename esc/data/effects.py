"""Signal edits for synthetic clips: trimming silence, fixing the length, adding background noise at an SNR.

All randomness comes from a `numpy.random.Generator` the caller seeds per clip, so a clip is reproducible on its
own, whatever order a thread pool renders clips in.
"""

from __future__ import annotations

import numpy as np

NOISE_KINDS = ("white", "pink")


def trim_silence(audio: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    """`audio` without leading and trailing samples quieter than `threshold_db` relative to its peak."""
    level = np.abs(audio)
    loud = np.flatnonzero(level > level.max() * 10 ** (threshold_db / 20))
    return audio[loud[0]: loud[-1] + 1] if loud.size else audio


def fit_length(audio: np.ndarray, length: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Exactly `length` samples: a longer clip keeps its middle; a shorter one is zero-padded, centered, or at a
    random offset drawn from `rng` (keyword recordings do not all start at the same instant)."""
    if audio.size >= length:
        start = (audio.size - length) // 2
        return audio[start: start + length].copy()
    out = np.zeros(length, dtype=audio.dtype)
    slack = length - audio.size
    start = slack // 2 if rng is None else int(rng.integers(0, slack + 1))
    out[start: start + audio.size] = audio
    return out


def noise(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise: "white" (flat spectrum) or "pink" (power falling as 1/f, like many real backgrounds)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    x = rng.standard_normal(length)
    if kind == "pink":
        spectrum = np.fft.rfft(x)
        freqs = np.arange(spectrum.size, dtype=np.float64)
        freqs[0] = 1.0  # keep DC finite; its weight is then the same as the lowest band's
        x = np.fft.irfft(spectrum / np.sqrt(freqs), n=length)
    return (x / np.sqrt(np.mean(x**2))).astype(np.float32)


def add_noise(
    audio: np.ndarray, kind: str, snr_db: float, rng: np.random.Generator, *, signal_power: float | None = None
) -> np.ndarray:
    """`audio` plus `kind` noise at `snr_db` below `signal_power` (default: the mean power of `audio`).

    Pass the power of the speech alone when `audio` has been padded with silence, so the SNR describes speech
    against noise rather than being diluted by the padding.
    """
    power = float(np.mean(audio**2)) if signal_power is None else signal_power
    scale = np.sqrt(power / 10 ** (snr_db / 10))
    return (audio + scale * noise(kind, audio.size, rng)).astype(np.float32)


def prevent_clipping(audio: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """`audio` scaled down, only if needed, so its peak is at most `peak` (16-bit FLAC would clip it otherwise)."""
    top = float(np.max(np.abs(audio)))
    return audio * (peak / top) if top > peak else audio
