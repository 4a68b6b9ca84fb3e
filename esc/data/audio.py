"""Read, validate, resample and write audio clips.

Everything downstream (feature extractors, calibration statistics) assumes finite, non-silent float32 mono audio at a
known rate, so every check happens here, once, and a bad file is reported by name instead of surfacing later as NaN
scales or an empty batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

# A clip whose peak stays below -80 dBFS carries no usable signal: 16-bit PCM resolves about -90 dBFS, so anything
# this quiet is digital silence or a few bits of dither.
SILENCE_PEAK = 1e-4

STEREO_MODES = ("mix", "error")


class BadAudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample 1-D float audio from `orig_rate` to `target_rate` (soxr, high quality); float32 out."""
    audio = np.asarray(audio, dtype=np.float32)
    if orig_rate == target_rate:
        return audio
    return soxr.resample(audio, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    path: str | Path,
    sampling_rate: int,
    *,
    expected_rate: int | None = None,
    stereo: str = "mix",
    max_seconds: float | None = None,
) -> np.ndarray:
    """Read `path` as float32 mono at `sampling_rate`, or raise `BadAudioError` naming the file.

    Args:
        path: any format libsndfile reads (WAV, FLAC, OGG, ...).
        sampling_rate: the rate of the returned array; the file is resampled to it when needed.
        expected_rate: when given, a file stored at another rate is an error rather than silently resampled (use
            it where the rate is part of the data contract, e.g. a dataset that should be 16 kHz throughout).
        stereo: what to do with a multichannel file: "mix" averages the channels, "error" raises.
        max_seconds: when given, only the first `max_seconds` of the file are read (and returned).

    Raises:
        FileNotFoundError: `path` does not exist.
        BadAudioError: unreadable or corrupt, no samples, silent, NaN/Inf samples, unexpected rate, or a
            multichannel file with `stereo="error"`.
    """
    if stereo not in STEREO_MODES:
        raise ValueError(f"stereo must be one of {STEREO_MODES}, got {stereo!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        with sf.SoundFile(path) as f:
            rate, channels = f.samplerate, f.channels
            if expected_rate is not None and rate != expected_rate:
                raise BadAudioError(path, f"sampling rate {rate} Hz, expected {expected_rate} Hz")
            if channels > 1 and stereo == "error":
                raise BadAudioError(path, f"{channels} channels, expected mono")
            frames = -1 if max_seconds is None else int(round(max_seconds * rate))
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except RuntimeError as err:  # soundfile's LibsndfileError: not audio, truncated, unknown format
        raise BadAudioError(path, f"unreadable ({err})") from err
    audio = data.mean(axis=1)
    validate(audio, path)
    return resample(audio, rate, sampling_rate)


def validate(audio: np.ndarray, path: str | Path) -> None:
    """Raise `BadAudioError` for `audio` (from `path`) that is empty, non-finite or silent."""
    if audio.size == 0:
        raise BadAudioError(path, "no samples")
    if not np.all(np.isfinite(audio)):
        raise BadAudioError(path, "NaN or Inf samples")
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE_PEAK:
        raise BadAudioError(path, f"silent (peak {peak:.2g} < {SILENCE_PEAK:g})")


def write_flac(path: str | Path, audio: np.ndarray, rate: int) -> Path:
    """Write mono float audio as 16-bit FLAC (parents created); values beyond [-1, 1] are clipped.

    Returns the path. Raises `BadAudioError` for audio that `load_audio` would reject, so no set is ever written
    that cannot be read back.
    """
    path = Path(path)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {audio.shape}")
    validate(audio, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(audio, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
    return path
