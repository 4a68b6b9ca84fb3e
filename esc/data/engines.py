"""Text-to-speech through Debian's espeak-ng and flite command-line programs, and SVOX Pico in process (`pico`).

All engines are deterministic (same arguments, byte-identical audio), so a synthetic set is reproducible from its
metadata alone. Speed and pitch are relative factors (1.0 = the voice's natural rate and pitch) so one metadata
column means the same thing for every engine; `engine_args` shows how each engine receives them.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esc.data.audio import load_audio, resample
from esc.data.pico import PICO_INSTALL_HINT, PICO_VOICES, pico_installed, pico_speak

ENGINES = ("espeak-ng", "flite", "pico")
INSTALL_HINT = "apt-get install espeak-ng flite"

# espeak-ng's own default of 175 words per minute is hard to follow; at about 130 it is recognised markedly better
# (shared notes: Whisper tiny.en WER 17% at -s 130 against 27% at the default), so 1.0 means 140 here.
ESPEAK_WPM = 140
ESPEAK_PITCH = 50  # espeak-ng's -p default (range 0-99)
# flite sets pitch as an absolute mean f0 in Hz, so a relative factor needs each voice's natural f0: these are the
# median f0 (librosa.pyin) of each voice at its defaults. rms ignores the setting.
FLITE_F0 = {"kal": 90.0, "kal16": 86.0, "awb": 130.0, "rms": 100.0, "slt": 170.0}


class EngineMissingError(RuntimeError):
    """A speech engine program is not installed."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an engine and its voice name (espeak-ng "en-us+m3", flite "slt")."""

    engine: str
    name: str

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; expected one of {ENGINES}")

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}"

    @classmethod
    def parse(cls, spec: str) -> Voice:
        """Voice from "engine:name", e.g. "flite:slt" or "espeak-ng:en-gb+f3"."""
        engine, sep, name = spec.partition(":")
        if not sep or not name:
            raise ValueError(f"voice {spec!r} is not 'engine:name'")
        return cls(engine, name)


def require_engine(engine: str) -> str:
    """Path of the `engine` program (pico: the name of its Python package), or `EngineMissingError` saying how to
    install it."""
    if engine == "pico":
        if not pico_installed():
            raise EngineMissingError(f"pico is not installed; install it with: {PICO_INSTALL_HINT}")
        return "ttspico"
    path = shutil.which(engine)
    if path is None:
        raise EngineMissingError(f"{engine} is not installed; install it with: {INSTALL_HINT}")
    return path


@functools.cache
def available_voices(engine: str) -> frozenset[str]:
    """Voice names `engine` knows: flite voices, or espeak-ng languages and variants (combined as "lang+variant")."""
    exe = require_engine(engine)
    if engine == "pico":
        return PICO_VOICES
    if engine == "flite":
        out = subprocess.run([exe, "-lv"], capture_output=True, text=True, check=True).stdout
        return frozenset(out.split(":", 1)[1].split())
    languages = _espeak_column(exe, "--voices", "Language")
    variants = {f.split("/", 1)[1] for f in _espeak_column(exe, "--voices=variant", "File")}
    return frozenset(languages | {f"+{v}" for v in variants})


def _espeak_column(exe: str, option: str, column: str) -> set[str]:
    """One column of espeak-ng's voice table (whitespace-separated, header first)."""
    lines = subprocess.run([exe, option], capture_output=True, text=True, check=True).stdout.splitlines()
    index = lines[0].split().index(column)
    return {line.split()[index] for line in lines[1:] if line.strip()}


def check_voice(voice: Voice) -> None:
    """Raise `ValueError` for a voice its engine does not have (flite would silently fall back to its default)."""
    known = available_voices(voice.engine)
    language, plus, variant = voice.name.partition("+")
    missing = [part for part in (language, plus + variant if plus else "") if part and part not in known]
    if missing:
        raise ValueError(f"{voice}: {' and '.join(missing)} unknown to {voice.engine}")


def engine_args(voice: Voice, speed: float, pitch: float) -> list[str]:
    """Command-line options that make `voice` speak at relative `speed` and `pitch` (no text, no output; espeak-ng
    and flite only, pico runs in process)."""
    if voice.engine == "espeak-ng":
        p = min(99, max(0, round(ESPEAK_PITCH * pitch)))
        return ["-v", voice.name, "-s", str(round(ESPEAK_WPM * speed)), "-p", str(p)]
    if voice.name not in FLITE_F0:
        raise ValueError(f"{voice}: natural f0 unknown, so pitch cannot be set; measure it and add it to FLITE_F0")
    f0 = FLITE_F0[voice.name] * pitch
    return ["-voice", voice.name, "--setf", f"duration_stretch={1 / speed:.4f}",
            "--setf", f"int_f0_target_mean={f0:.2f}"]


def synthesize(voice: Voice, text: str, *, speed: float = 1.0, pitch: float = 1.0, rate: int = 16000) -> np.ndarray:
    """Speak `text` with `voice`; float32 mono audio at `rate` (resampled from the engine's own rate)."""
    exe = require_engine(voice.engine)
    if voice.engine == "pico":
        audio, own_rate = pico_speak(voice.name, text, speed=speed, pitch=pitch)
        return resample(audio, own_rate, rate)
    with tempfile.TemporaryDirectory(prefix="esc-tts-") as tmp:
        wav = Path(tmp) / "speech.wav"
        if voice.engine == "espeak-ng":
            cmd = [exe, *engine_args(voice, speed, pitch), "-w", str(wav), text]
        else:
            cmd = [exe, *engine_args(voice, speed, pitch), "-t", text, "-o", str(wav)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"{voice} failed on {text!r}: {proc.stderr.strip() or proc.returncode}")
        return load_audio(wav, rate)
