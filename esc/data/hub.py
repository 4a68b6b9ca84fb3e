"""Data sets through `datasets` (hub id with its local cache, or a `save_to_disk` copy) as split entries.

Audio is taken undecoded and read with the same `load_audio` checks as a local folder, so rate, channel and
corruption rules are identical whatever the source. When the set is neither cached nor reachable the error says how
to provide it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from esc.data.sources import Entry


class DatasetUnavailableError(RuntimeError):
    """A hub data set could not be loaded; the message says how to provide it."""


def _load(path: str, hub_config: str | None, split: str):
    import datasets

    try:
        if Path(path).is_dir():
            loaded = datasets.load_from_disk(path)
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        return datasets.load_dataset(path, hub_config, split=split)
    except Exception as exc:  # datasets raises ConnectionError, FileNotFoundError, ValueError... for the same cause
        offline = os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false", "False")
        raise DatasetUnavailableError(
            f"could not load data set {path!r} (config {hub_config!r}, split {split!r})"
            f"{' with HF_DATASETS_OFFLINE set' if offline else ''}: {type(exc).__name__}: {exc}\n"
            "Provide it in one of these ways: (1) with network access, run once so `datasets` caches it, then "
            "set HF_DATASETS_OFFLINE=1 (and HF_HUB_OFFLINE=1) to reuse the cache offline; (2) save it with "
            "`load_dataset(...).save_to_disk(DIR)` on a connected machine, copy DIR here and pass dataset.path=DIR; "
            "(3) export it as an audiofolder (<dir>/<split>/metadata.csv with file_name and the target column) and "
            "use dataset=folder dataset.path=<dir>."
        ) from exc


def hub_entries(path: str, hub_config: str | None, split: str, audio_column: str, target_column: str,
                where: Mapping[str, list], reader: Callable[[Path], np.ndarray]) -> list[Entry]:
    """Entries of one split, keeping rows whose columns take one of the `where` values ({column: [values]})."""
    from datasets import Audio, ClassLabel

    data = _load(path, hub_config, split)
    for column in [audio_column, target_column, *where]:
        if column not in data.column_names:
            raise ValueError(f"data set {path!r} split {split!r} has no column {column!r}; "
                             f"columns: {data.column_names}")
    if where:
        allowed = {column: set(values) for column, values in where.items()}
        data = data.filter(lambda row: all(row[c] in v for c, v in allowed.items()))
    data = data.cast_column(audio_column, Audio(decode=False))
    label_feature = data.features[target_column]
    spill = Path(tempfile.mkdtemp(prefix="esc-hub-audio-"))
    entries = []
    for index, row in enumerate(data):
        target = row[target_column]
        if isinstance(label_feature, ClassLabel):
            target = label_feature.int2str(target)
        name = f"{path}/{split}/{index}:{row[audio_column].get('path') or ''}"
        entries.append(Entry(name, str(target).strip() or None, _reader(row[audio_column], spill, index, reader),
                             None if str(target).strip() else f"empty {target_column!r}"))
    return entries


def _reader(audio: Mapping, spill: Path, index: int, reader: Callable[[Path], np.ndarray]):
    """Read a file the cache holds on disk directly; embedded bytes go through a temporary file so that the very
    same `load_audio` checks apply."""

    def read() -> np.ndarray:
        local = audio.get("path")
        if local and Path(local).is_file():
            return reader(Path(local))
        file = spill / f"{index}{Path(local or '').suffix or '.wav'}"
        file.write_bytes(audio["bytes"])
        try:
            return reader(file)
        finally:
            file.unlink()

    return read
