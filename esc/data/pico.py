"""SVOX Pico text-to-speech, in process through the `ttspico` package (pip; it builds Pico from source with its
language files: Apache 2.0).

Pico's English voices are two female HMM voices, en-US and en-GB: statistical parametric speech like flite's slt and
unlike espeak-ng's formant synthesis, and the only female voices of that kind this machine can synthesise besides
slt itself (which a keyword set holds out). Pico is deterministic: the same text and settings give the same samples.
"""

from __future__ import annotations

import numpy as np

# ttspico's languages (English: en-US and en-GB; the built-in speech sets use none of them).
PICO_VOICES = frozenset({"en-US", "en-GB", "de-DE", "es-ES", "fr-FR", "it-IT"})
PICO_INSTALL_HINT = "pip install ttspico (it compiles SVOX Pico, so it needs a C compiler)"
# Pico takes speed ("rate") and pitch as percentages of the voice's own and refuses values outside these.
PICO_RATE_RANGE = (20, 500)
PICO_PITCH_RANGE = (50, 200)


def pico_installed() -> bool:
    """Whether `ttspico` can be imported."""
    try:
        import ttspico  # noqa: F401
    except ImportError:
        return False
    return True


def _percent(name: str, factor: float, bounds: tuple[int, int], voice: str) -> int:
    """`factor` as Pico's integer percentage, or `ValueError` naming the voice when Pico would refuse it."""
    percent = round(100 * factor)
    if not bounds[0] <= percent <= bounds[1]:
        raise ValueError(f"pico:{voice}: {name} {factor:g} is outside Pico's {bounds[0] / 100:g}-{bounds[1] / 100:g}")
    return percent


def pico_speak(voice: str, text: str, *, speed: float, pitch: float) -> tuple[np.ndarray, int]:
    """Speak `text` with Pico's `voice` (a language, e.g. "en-US") at relative `speed` and `pitch`.

    Returns float32 mono samples in [-1, 1) and their rate (Pico's own, 16 kHz).
    """
    import ttspico

    if voice not in PICO_VOICES:
        raise ValueError(f"pico:{voice}: unknown to pico; expected one of {sorted(PICO_VOICES)}")
    engine = ttspico.TtsEngine(voice)
    engine.rate = _percent("speed", speed, PICO_RATE_RANGE, voice)
    engine.pitch = _percent("pitch", pitch, PICO_PITCH_RANGE, voice)
    chunks, formats = [], set()

    def collect(fmt, audio, fin) -> bool:
        # Pico reuses its output buffer between calls, so each chunk must be copied before the next one arrives.
        formats.add(tuple(fmt))
        chunks.append(bytes(audio))
        return True

    engine.speak(text, collect)
    if not chunks:
        raise RuntimeError(f"pico:{voice} produced no audio for {text!r}")
    (rate, bits, channels), = formats  # Pico has one output format: 16-bit mono at 16 kHz
    if (bits, channels) != (16, 1):
        raise RuntimeError(f"pico:{voice}: unexpected output format {bits}-bit x {channels} channels")
    samples = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float32) / 32768.0
    return samples, int(rate)
