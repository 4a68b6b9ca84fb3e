"""Build a model adapter from a model config (the `model` config group)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from esc.models.ast import ASTAdapter
from esc.models.base import CheckpointError, ModelAdapter
from esc.models.frontend import set_highpass
from esc.models.wav2vec2 import Wav2Vec2ClassificationAdapter, Wav2Vec2CTCAdapter
from esc.models.whisper import WhisperAdapter

ADAPTERS: dict[tuple[str, str], type[ModelAdapter]] = {
    ("ast", "classification"): ASTAdapter,
    ("wav2vec2", "classification"): Wav2Vec2ClassificationAdapter,
    ("wav2vec2", "ctc"): Wav2Vec2CTCAdapter,
    ("whisper", "seq2seq"): WhisperAdapter,
}
SOURCES = ("pretrained", "bundled", "config", "ct2")
CLASSIFIER_FAMILIES = {"audio-spectrogram-transformer": "ast", "wav2vec2": "wav2vec2"}  # config.json model_type


def bundled_model(name: str) -> Path:
    """The folder of the checkpoint `name` shipped under `esc/assets/models/` (see its metrics.json)."""
    root = Path(str(resources.files("esc") / "assets" / "models"))
    path = root / str(name)
    if not (path / "config.json").is_file():
        found = sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []
        raise CheckpointError(f"no bundled model {name!r} in {root}; bundled models: {', '.join(found) or 'none'}")
    return path


def _labels(cfg: Mapping) -> list[str]:
    labels = list(cfg.get("labels") or [])
    if not labels or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"model {cfg.get('name')!r}: a classifier built from a config needs `labels`, a list of "
                         f"strings (quote yes/no/on/off in YAML, which reads them as booleans); got {labels}")
    return labels


def build_adapter(cfg: Mapping) -> ModelAdapter:
    """Build from `family`, `task`, `source` (pretrained | bundled | config | ct2), `path`, `config`, `labels`,
    `highpass_hz`.

    `source: pretrained` loads `path` (hub id or local directory) with from_pretrained; `source: bundled` loads
    the checkpoint folder `path` shipped under `esc/assets/models/` (trained with esc.train); `source: config`
    builds a random model from the `config` fields (tests, training from scratch); `source: ct2` imports a
    CTranslate2 Whisper directory (`path`, default the bundled real tiny.en). `highpass_hz` (esc.models.frontend):
    null keeps the checkpoint's own front-end filter, 0 removes it, a cutoff in Hz puts one in (training a model
    from a config behind a filter: it is saved with the checkpoint).
    """
    adapter = _build(cfg)
    set_highpass(adapter.processor, cfg.get("highpass_hz"), adapter.sampling_rate)
    return adapter


def trained_classifier(path: str | Path, family: str | None = None) -> ModelAdapter:
    """The keyword classifier saved in the checkpoint folder `path` (what esc.train writes), its family read from
    config.json's model_type unless given."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{path}: not a checkpoint folder (no config.json)")
    if family is None:
        model_type = json.loads(config.read_text()).get("model_type")
        if model_type not in CLASSIFIER_FAMILIES:
            raise CheckpointError(f"{config}: model_type {model_type!r} is not a keyword classifier's; "
                                  f"known: {sorted(CLASSIFIER_FAMILIES)}")
        family = CLASSIFIER_FAMILIES[model_type]
    return build_adapter({"family": family, "task": "classification", "source": "pretrained", "path": str(path)})


def _build(cfg: Mapping) -> ModelAdapter:
    """The adapter of `cfg` with its checkpoint's own front end (`highpass_hz` is applied by the caller)."""
    key = (cfg.get("family"), cfg.get("task"))
    if key not in ADAPTERS:
        raise ValueError(f"unknown model family/task {key}; valid: {sorted(ADAPTERS)}")
    adapter_class = ADAPTERS[key]
    source = cfg.get("source", "pretrained")
    attn = cfg.get("attn_implementation", "eager")
    if source == "pretrained":
        if not cfg.get("path"):
            raise ValueError(f"model {cfg.get('name')!r}: source 'pretrained' needs model.path (hub id or directory)")
        return adapter_class.from_pretrained(str(cfg["path"]), attn_implementation=attn)
    if source == "bundled":
        return adapter_class.from_pretrained(str(bundled_model(cfg.get("path"))), attn_implementation=attn)
    if source == "config":
        extra = {"labels": _labels(cfg)} if adapter_class.task == "classification" else {}
        return adapter_class.from_config(dict(cfg.get("config") or {}), attn_implementation=attn, **extra)
    if source == "ct2" and adapter_class is WhisperAdapter:
        return WhisperAdapter.from_ct2(cfg.get("path"), attn_implementation=attn)
    raise ValueError(f"model {cfg.get('name')!r}: source {source!r} is not valid for {key}; valid: {SOURCES} "
                     "(ct2 only for Whisper)")
