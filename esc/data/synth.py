"""Plan and render synthetic clips into an audiofolder split.

A plan is a list of `Clip`s: everything needed to render one file (text, voice, speed, pitch, formant shift, noise
and its seed) is drawn up front from one seeded generator, then clips render in a thread pool. Rendering depends
only on the clip, so the same plan gives byte-identical files whatever the number of threads.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esc.data.audio import resample, write_flac
from esc.data.effects import NOISE_KINDS, add_noise, fit_length, prevent_clipping, trim_silence
from esc.data.engines import Voice, check_voice, synthesize
from esc.data.folders import prepare_split, write_metadata

SAMPLING_RATE = 16000


@dataclass(frozen=True)
class Variation:
    """Ranges the plan draws each clip's delivery from (uniformly); speed, pitch and formant are relative factors.

    `formant` scales the voice's formants (its vocal tract: about 1.15-1.2 from an adult male to an adult female
    voice) independently of pitch, which the engines cannot do themselves; None draws nothing, so plans made
    without it stay as they were.
    """

    speed: tuple[float, float] = (0.85, 1.05)
    pitch: tuple[float, float] = (0.9, 1.1)
    formant: tuple[float, float] | None = None
    noise_fraction: float = 0.0  # share of clips that get background noise
    snr_db: tuple[float, float] = (5.0, 30.0)


@dataclass(frozen=True)
class Clip:
    """One planned file: what to say, who says it and how; `target` is its transcription or label."""

    file_name: str
    target: str
    text: str
    voice: Voice
    speed: float
    pitch: float
    noise: str  # "none" or one of effects.NOISE_KINDS
    noise_db: float | None  # SNR of speech over the noise, in dB
    seed: int  # for the noise and the placement in a fixed-length window
    formant: float = 1.0


def balanced_voices(voices: Sequence[Voice], n: int, rng: np.random.Generator) -> list[Voice]:
    """`n` voices, each of `voices` used n // len(voices) or one more times, in random order.

    The voices that get the one more are drawn too, so over many small plans (one per keyword) no voice is
    systematically favoured."""
    offset = int(rng.integers(len(voices)))
    pool = [voices[(offset + i) % len(voices)] for i in range(n)]
    return [pool[i] for i in rng.permutation(n)]


def plan(
    items: Sequence[tuple[str, str, str]], voices: Sequence[Voice], variation: Variation, rng: np.random.Generator
) -> list[Clip]:
    """Clips for `items` of (file_name, target, text), with voices balanced and delivery drawn from `variation`."""
    clips = []
    for (file_name, target, text), voice in zip(items, balanced_voices(voices, len(items), rng)):
        noisy = rng.random() < variation.noise_fraction
        formant = 1.0 if variation.formant is None else round(float(rng.uniform(*variation.formant)), 3)
        clips.append(Clip(
            file_name=file_name, target=target, text=text, voice=voice,
            # Rounded so the metadata states exactly what was rendered.
            speed=round(float(rng.uniform(*variation.speed)), 3),
            pitch=round(float(rng.uniform(*variation.pitch)), 3),
            noise=str(rng.choice(NOISE_KINDS)) if noisy else "none",
            noise_db=round(float(rng.uniform(*variation.snr_db)), 1) if noisy else None,
            seed=int(rng.integers(2**63)),
            formant=formant,
        ))
    return clips


def speak(clip: Clip) -> np.ndarray:
    """The engine's audio of `clip` at SAMPLING_RATE, its formants moved by `clip.formant`.

    A formant factor f renders at speed / f and pitch / f and then plays the audio f times faster (resampling from
    f * SAMPLING_RATE), which multiplies every frequency by f and divides the duration by f: formants end up moved
    by f while speed and pitch end up as planned (flite's rms ignores pitch settings, so its pitch moves by f too).
    """
    speed, pitch = clip.speed / clip.formant, clip.pitch / clip.formant
    audio = synthesize(clip.voice, clip.text, speed=speed, pitch=pitch, rate=SAMPLING_RATE)
    return resample(audio, round(SAMPLING_RATE * clip.formant), SAMPLING_RATE)


def render(clip: Clip, seconds: float | None = None) -> np.ndarray:
    """The audio of `clip` at SAMPLING_RATE; with `seconds`, trimmed of silence and fitted to that length."""
    rng = np.random.default_rng(clip.seed)
    audio = speak(clip)
    speech = trim_silence(audio)
    if seconds is not None:
        audio = fit_length(speech, round(seconds * SAMPLING_RATE), rng)
    if clip.noise != "none":
        audio = add_noise(audio, clip.noise, clip.noise_db, rng, signal_power=float(np.mean(speech**2)))
    return prevent_clipping(audio)


def metadata_row(clip: Clip, column: str) -> dict:
    """The metadata.csv row of `clip`, its target under `column` ("transcription" or "label")."""
    return {
        "file_name": clip.file_name, column: clip.target, "text": clip.text, "voice": clip.voice.name,
        "engine": clip.voice.engine, "speed": clip.speed, "pitch": clip.pitch, "noise": clip.noise,
        "noise_db": "" if clip.noise_db is None else clip.noise_db, "formant": clip.formant,
    }


def write_split(
    split_dir: str | Path,
    clips: Sequence[Clip],
    column: str,
    *,
    seconds: float | None = None,
    jobs: int = 2,
    progress: bool = True,
) -> Path:
    """Render `clips` as 16 kHz FLAC files plus metadata.csv into the new folder `split_dir`; returns it."""
    for voice in sorted({c.voice for c in clips}, key=str):
        check_voice(voice)  # fail before rendering anything
    split_dir = prepare_split(split_dir)

    def work(clip: Clip) -> None:
        write_flac(split_dir / clip.file_name, render(clip, seconds), SAMPLING_RATE)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        # Engines run as subprocesses, so threads overlap them in parallel despite the GIL.
        for done, _ in enumerate(pool.map(work, clips), start=1):
            if progress:
                print(f"\r{split_dir}: {done}/{len(clips)} clips", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    write_metadata(split_dir, [metadata_row(c, column) for c in clips])
    return split_dir
