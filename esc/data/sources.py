"""Where the clips of a split come from: a local audiofolder (bundled or any folder) listed as `Entry`s.

An entry knows its name (the file path), its target (transcript or label, None for unlabelled calibration audio)
and how to read its audio; problems found from the metadata alone (a file with no row, a row with no target, a row
naming a missing file) are recorded on the entry, so the bad-file policy treats them like unreadable audio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esc.data.folders import METADATA, read_metadata

# Extensions libsndfile reads; other files in a split folder (README, metadata) are not clips.
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64"})


@dataclass(frozen=True)
class Entry:
    """One clip before reading: `read()` returns float32 mono audio or raises BadAudioError."""

    name: str
    target: str | None
    read: Callable[[], np.ndarray]
    problem: str | None = None  # why this entry is bad before its audio is even read


def default_target_column(task: str) -> str:
    """The metadata column holding targets for a model task: labels for classifiers, transcripts otherwise."""
    return "label" if task == "classification" else "transcription"


def folder_entries(split_dir: str | Path, target_column: str, reader: Callable[[Path], np.ndarray],
                   require_targets: bool) -> list[Entry]:
    """Entries of an audiofolder split, in metadata order, then unlisted audio files in name order.

    `reader(path)` reads one file (validation options bound by the caller). When the metadata has no
    `target_column` at all, the split is unlabelled: allowed for calibration (`require_targets=False`), an error
    for evaluation. When the column exists, a row with an empty value and an audio file without a row are bad.
    """
    split_dir = Path(split_dir)
    if not (split_dir / METADATA).is_file():
        raise FileNotFoundError(f"{split_dir / METADATA} is missing: a split folder needs a metadata.csv with a "
                                f"file_name column (and {target_column!r} for targets)")
    rows = read_metadata(split_dir)
    columns = set(rows[0]) if rows else set()
    if "file_name" not in columns:
        raise ValueError(f"{split_dir / METADATA} has no file_name column (columns: {sorted(columns)})")
    labelled = target_column in columns
    if require_targets and not labelled:
        raise ValueError(f"{split_dir / METADATA} has no {target_column!r} column, which evaluation needs "
                         f"(columns: {sorted(columns)}); set dataset.target_column")
    entries, listed = [], set()
    for row in rows:
        path = split_dir / row["file_name"]
        listed.add(path.resolve())
        target = (row[target_column] or "").strip() if labelled else None
        problem = None
        if not path.is_file():
            problem = "listed in metadata.csv but the file does not exist"
        elif labelled and not target:
            problem = f"empty {target_column!r} in metadata.csv"
        entries.append(Entry(str(path), target, _bind(reader, path), problem))
    for path in sorted(p for p in split_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS):
        if path.resolve() not in listed:
            problem = f"no row in metadata.csv (so no {target_column!r})" if labelled else None
            entries.append(Entry(str(path), None, _bind(reader, path), problem))
    return entries


def _bind(reader: Callable[[Path], np.ndarray], path: Path) -> Callable[[], np.ndarray]:
    return lambda: reader(path)

