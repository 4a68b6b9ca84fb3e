"""The audiofolder layout: a split directory holding audio files and a `metadata.csv` that names them.

This is the layout `datasets.load_dataset("audiofolder", data_dir=...)` reads, so every set this package writes
(synthetic, imported) is loadable by `datasets` and by our own code alike.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

METADATA = "metadata.csv"


def write_metadata(split_dir: str | Path, rows: Sequence[dict]) -> Path:
    """Write `rows` as `<split_dir>/metadata.csv`; columns in the first row's key order, `file_name` first.

    Every row must have the same keys and name a file that exists in `split_dir`, so a metadata file never
    promises audio that is not there.
    """
    split_dir = Path(split_dir)
    if not rows:
        raise ValueError(f"{split_dir}: no rows to write")
    columns = list(rows[0])
    if columns[0] != "file_name":
        raise ValueError(f"the first column must be file_name, got {columns[0]!r}")
    for row in rows:
        if list(row) != columns:
            raise ValueError(f"{split_dir}: row {row} has columns {list(row)}, expected {columns}")
        if not (split_dir / row["file_name"]).is_file():
            raise FileNotFoundError(split_dir / row["file_name"])
    path = split_dir / METADATA
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_metadata(split_dir: str | Path) -> list[dict[str, str]]:
    """Rows of `<split_dir>/metadata.csv` as dicts of strings, in file order."""
    with open(Path(split_dir) / METADATA, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def prepare_split(split_dir: str | Path) -> Path:
    """Create `split_dir` for a new split, refusing to mix new files with an existing split's."""
    split_dir = Path(split_dir)
    if split_dir.exists() and any(split_dir.iterdir()):
        raise FileExistsError(f"{split_dir} is not empty; choose a new output folder or remove it")
    split_dir.mkdir(parents=True, exist_ok=True)
    return split_dir
