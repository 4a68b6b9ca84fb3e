"""Tiny audiofolders for run tests: tones with noise written by soundfile, a few clips per split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

LABELS = ("yes", "no", "up", "down")
SENTENCES = ("hello world", "the quick brown fox", "seven cats", "open the door")


def tone(seed: int, seconds: float = 0.5, rate: int = 16000, channels: int = 1) -> np.ndarray:
    """A noisy tone whose pitch depends on `seed`, so every clip is distinct audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * (150 + 37 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    audio = audio.astype(np.float32)
    return audio if channels == 1 else np.stack([audio] * channels, axis=1)


def write_split(split_dir: Path, rows: list[tuple[str, str | None]], column: str, first_seed: int = 0) -> Path:
    """Write one clip per (file name, target) row, and metadata.csv listing them; a None target leaves it empty."""
    split_dir.mkdir(parents=True, exist_ok=True)
    for i, (name, _) in enumerate(rows):
        sf.write(split_dir / name, tone(first_seed + i), 16000)
    with open(split_dir / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", column])
        writer.writerows([(name, target or "") for name, target in rows])
    return split_dir


def write_folder(root: Path, task: str = "classification", n_calibration: int = 4, n_evaluation: int = 4) -> Path:
    """An audiofolder with calibration/ and evaluation/ splits of distinct clips (labels or transcripts)."""
    column, targets = ("label", LABELS) if task == "classification" else ("transcription", SENTENCES)
    for split, n, seed in (("calibration", n_calibration, 0), ("evaluation", n_evaluation, 100)):
        write_split(root / split, [(f"{split[:3]}{i}.wav", targets[i % len(targets)]) for i in range(n)], column, seed)
    return root
