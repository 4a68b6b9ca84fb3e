"""Pack short calibration clips into the model's fixed input window.

Whisper's encoder always runs on 30 s of input however short the clip, so eight 4-second clips cost eight
encoder passes unpacked and about one packed. Calibration statistics and ESC's fitness see the same speech
either way; packing only removes the cost of padding. Clips are joined in order with a short silence between
them, and their transcripts with a space, so teacher forcing follows the whole window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from esc.data.datamodule import Example

GAP_SECONDS = 0.3


def pack_examples(examples: Sequence[Example], window_samples: int, sampling_rate: int,
                  gap_seconds: float = GAP_SECONDS) -> list[Example]:
    """Greedily join consecutive clips into windows of at most `window_samples`; longer clips stay alone.

    A window's target is its clips' targets joined by spaces, or None when any clip has no target.
    """
    gap = np.zeros(int(gap_seconds * sampling_rate), dtype=np.float32)
    windows: list[list[Example]] = []
    length = 0
    for example in examples:
        added = len(example.audio) + (len(gap) if windows and windows[-1] else 0)
        if windows and windows[-1] and length + added <= window_samples:
            windows[-1].append(example)
            length += added
        else:
            windows.append([example])
            length = len(example.audio)
    return [_join(window, gap) for window in windows]


def _join(window: list[Example], gap: np.ndarray) -> Example:
    if len(window) == 1:
        return window[0]
    parts = [part for example in window for part in (gap, example.audio)][1:]
    audio = np.concatenate(parts)
    targets = [e.target for e in window]
    target = None if any(t is None for t in targets) else " ".join(str(t) for t in targets)
    return Example("+".join(e.name for e in window), audio, target, hashlib.sha1(audio.tobytes()).hexdigest())
