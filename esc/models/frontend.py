"""An optional fixed high-pass filter in front of a model's feature extractor, saved with its checkpoint.

Generated voices differ most below about 300 Hz: flite's slt, the held-out voice the keyword models miss, has 74%
of its energy at 80-300 Hz where the espeak-ng voices have 8-26%. A model trained and evaluated behind a high-pass
never sees that band, so it cannot learn to depend on it. The cutoff is a property of the checkpoint (training and
every later evaluation must filter alike), so it is stored in the feature extractor's saved config under
HIGHPASS_KEY and read back from there whenever the checkpoint is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.signal import butter, sosfilt

HIGHPASS_KEY = "esc_highpass_hz"
HIGHPASS_ORDER = 4


@lru_cache(maxsize=8)
def _design(cutoff_hz: float, sampling_rate: int) -> np.ndarray:
    # One design per cutoff: collate filters every clip of every batch with the same one.
    return butter(HIGHPASS_ORDER, cutoff_hz, btype="highpass", fs=sampling_rate, output="sos")


def highpass(audio: np.ndarray, cutoff_hz: float, sampling_rate: int) -> np.ndarray:
    """`audio` through a causal Butterworth high-pass of order HIGHPASS_ORDER (zero initial state), float32."""
    sos = _design(float(cutoff_hz), int(sampling_rate))
    return sosfilt(sos, np.asarray(audio, dtype=np.float64)).astype(np.float32)


def _extractor(processor: Any) -> Any:
    # Whisper's processor wraps its feature extractor; the classifiers' processor is the extractor itself.
    return getattr(processor, "feature_extractor", processor)


def highpass_cutoff(processor: Any) -> float | None:
    """The high-pass cutoff a processor's checkpoint was trained behind (None: no filter)."""
    return getattr(_extractor(processor), HIGHPASS_KEY, None) or None


def set_highpass(processor: Any, cutoff_hz: float | None, sampling_rate: int) -> None:
    """Put a high-pass at `cutoff_hz` in front of `processor` (0: remove it; None: leave the checkpoint's own).

    The value is written on the feature extractor, so `save_pretrained` stores it and `from_pretrained` restores it.
    """
    if cutoff_hz is None:
        return
    cutoff = float(cutoff_hz)
    if not 0.0 <= cutoff < sampling_rate / 2:
        raise ValueError(f"model.highpass_hz must be 0 (no filter) or a cutoff in Hz below the Nyquist frequency "
                         f"{sampling_rate / 2:g} Hz; got {cutoff_hz!r}")
    setattr(_extractor(processor), HIGHPASS_KEY, cutoff or None)


def apply_frontend(processor: Any, audios: Sequence[np.ndarray], sampling_rate: int) -> list[np.ndarray]:
    """The waveforms as the model must see them: high-passed when its checkpoint says so, else unchanged."""
    cutoff = highpass_cutoff(processor)
    if cutoff is None:
        return list(audios)
    return [highpass(audio, cutoff, sampling_rate) for audio in audios]
