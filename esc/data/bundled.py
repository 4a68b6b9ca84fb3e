"""Small speech sets shipped inside the package (under `esc/assets/`), usable with no generation step."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

BUNDLED = ("sentences_small",)


def bundled_path(name: str) -> Path:
    """Folder of the bundled set `name`, holding its `calibration/` and `evaluation/` audiofolder splits.

    "sentences_small": 16 calibration and 48 evaluation synthetic sentences (see its README.md for the command
    that made it).
    """
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled set {name!r}; available: {', '.join(BUNDLED)}")
    path = Path(str(resources.files("esc") / "assets" / name))
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is missing: the package was installed without its assets")
    return path
