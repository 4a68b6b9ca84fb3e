"""What a run leaves on disk: its folder's identity, atomic result files, and the FP evaluation cache.

A run folder is named by a config id, a hash of every setting that changes the result, so an equal re-run finds it.
Files are written to a temporary name and renamed into place, so an interrupted sweep never leaves a half-written
`results.json` that would later be mistaken for a finished run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

RESULTS = "results.json"
# Settings that decide a run's outcome; logger, trainer, threads and output folders do not.
RESULT_KEYS = ("model", "dataset", "quant", "calibrator", "ptq", "seed")
# Settings of the data set that only decide the calibration draw, so they leave the FP evaluation unchanged.
CALIBRATION_ONLY_KEYS = ("calibration_size", "calibration_seed", "calibration_split", "calibration_filter",
                         "pack_calibration")
# Settings of a model config that only place quantizers, so they leave the FP model unchanged.
PLACEMENT_ONLY_KEYS = ("rules",)
# Settings of a model config that change a run's result but not which model it is: rows of their own in a report.
ROW_MODEL_KEYS = ("rules", "highpass_hz")


def digest(data: object, length: int = 10) -> str:
    """A short stable hash of JSON-serialisable data (key order does not matter)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def _plain(cfg: DictConfig, key: str) -> object:
    return OmegaConf.to_container(cfg[key], resolve=True) if isinstance(cfg[key], DictConfig) else cfg[key]


# Settings added after runs existed, with the value that reproduces those runs: at that value a setting is left out
# of the config id, so the earlier runs' folders stay the folders of the same settings (a re-run sweep skips them).
ID_NEUTRAL = {"calibrator": {"start_bias_correction": False, "search": None}, "model": {"highpass_hz": None}}


def _settings(cfg: DictConfig, key: str):
    """The plain value of `cfg[key]`, settings at their `ID_NEUTRAL` value left out."""
    value, neutral = _plain(cfg, key), ID_NEUTRAL.get(key, {})
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if not (k in neutral and v == neutral[k])}
    return value


def config_id(cfg: DictConfig) -> str:
    """Hash of the result-deciding settings (`RESULT_KEYS`) of a composed run config, settings at their
    `ID_NEUTRAL` value left out."""
    return digest({key: _settings(cfg, key) for key in RESULT_KEYS if key in cfg})


def calibration_options(dataset: Mapping) -> dict:
    """Which calibration clips a resolved dataset config draws (its `CALIBRATION_ONLY_KEYS`), as results.json
    records them."""
    return {k: v for k, v in dataset.items() if k in CALIBRATION_ONLY_KEYS}


def ptq_options(ptq: Mapping) -> list[dict]:
    """Each PTQ stage's settings (its config without `_target_`), in chain order, as results.json records them."""
    return [{k: v for k, v in stage.items() if not k.startswith("_")} for stage in ptq.get("stages") or []]


def model_options(model: Mapping) -> dict:
    """The settings of a model config that change a run without naming another model (placement rules, the
    front-end filter), as results.json records them."""
    return {k: model.get(k) for k in ROW_MODEL_KEYS}


def quant_options(quant: Mapping) -> dict:
    """A quant preset's settings without its name, as results.json records them (an overridden preset keeps its
    name: these tell it apart)."""
    return {k: v for k, v in quant.items() if k != "name"}


def fp_cache_path(cfg: DictConfig) -> Path:
    """Where the FP evaluation of this model on this evaluation split is cached (shared by every quant setting)."""
    dataset = {k: v for k, v in _plain(cfg, "dataset").items() if k not in CALIBRATION_ONLY_KEYS}
    model = {k: v for k, v in _settings(cfg, "model").items() if k not in PLACEMENT_ONLY_KEYS}
    key = digest({"model": model, "dataset": dataset})
    return Path(cfg.out_dir) / ".fp_cache" / f"{cfg.model.name}-{cfg.dataset.name}-{key}.json"


def register_resolvers() -> None:
    """Make `${esc_config_id:}` (the run folder name) and `${esc_abspath:path}` (sweep cells) available to configs."""
    if not OmegaConf.has_resolver("esc_config_id"):
        OmegaConf.register_new_resolver("esc_config_id", lambda *, _root_: config_id(_root_))
    if not OmegaConf.has_resolver("esc_abspath"):
        OmegaConf.register_new_resolver("esc_abspath", os.path.abspath)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Mapping) -> Path:
    """Atomically write `data` as indented JSON."""
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> dict:
    """Read a JSON file written by `write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def finished(run_dir: str | Path) -> bool:
    """Whether the run in `run_dir` has completed (its results file exists)."""
    return (Path(run_dir) / RESULTS).is_file()


def find_results(root: str | Path) -> list[Path]:
    """Every results file below `root`, sorted."""
    return sorted(Path(root).rglob(RESULTS))
