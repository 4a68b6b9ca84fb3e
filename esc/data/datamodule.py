"""The calibration and evaluation splits of one run: selection, bad-file policy, disjointness, batches.

Calibration clips are a deterministic draw (`calibration_size` clips in an order shuffled by `calibration_seed`),
evaluation clips the first `eval_limit` in file order. A bad clip (unreadable, empty, silent, wrong rate or channel
count when so configured, missing target) is either skipped by name and replaced by the next in order, or stops the
run, as `on_bad_file` says. The two splits must not share a clip: they are compared by a hash of the audio content,
which also catches the same recording stored twice under different names.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from esc.data.audio import BadAudioError, load_audio
from esc.data.bundled import bundled_path
from esc.data.hub import hub_entries
from esc.data.sources import Entry, default_target_column, folder_entries
from esc.models.base import ModelAdapter

log = logging.getLogger(__name__)

SOURCES = ("bundled", "folder", "hub")
BAD_FILE_POLICIES = ("skip", "error")


@dataclass(frozen=True)
class Example:
    """One read clip: float32 mono audio at the model's rate, its target and a hash of the audio."""

    name: str
    audio: np.ndarray
    target: str | None
    digest: str


@dataclass(frozen=True)
class BadFile:
    """A clip left out, and why."""

    name: str
    reason: str


class SplitOverlapError(ValueError):
    """The calibration and evaluation splits share clips."""


def read_entries(entries: Sequence[Entry], count: int | None, on_bad_file: str) -> tuple[list[Example], list[BadFile]]:
    """Read entries in order until `count` good clips (all when None); bad ones are skipped or raise."""
    if on_bad_file not in BAD_FILE_POLICIES:
        raise ValueError(f"on_bad_file must be one of {BAD_FILE_POLICIES}, got {on_bad_file!r}")
    examples, bad = [], []
    for entry in entries:
        if count is not None and len(examples) == count:
            break
        try:
            if entry.problem:
                raise BadAudioError(entry.name, entry.problem)
            audio = entry.read()
        except (BadAudioError, FileNotFoundError) as err:
            reason = err.reason if isinstance(err, BadAudioError) else f"file not found ({err})"
            if on_bad_file == "error":
                raise BadAudioError(entry.name, f"{reason} (dataset.on_bad_file=skip leaves such files out)") from err
            log.warning("skipping bad file %s: %s", entry.name, reason)
            bad.append(BadFile(entry.name, reason))
            continue
        examples.append(Example(entry.name, audio, entry.target, hashlib.sha1(audio.tobytes()).hexdigest()))
    if count is not None and len(examples) < count:
        log.warning("asked for %d clips, only %d good ones available", count, len(examples))
    return examples, bad


def check_disjoint(calibration: Sequence[Example], evaluation: Sequence[Example]) -> None:
    """Raise SplitOverlapError naming the clips that appear (by audio content) in both splits."""
    in_calibration = {e.digest: e.name for e in calibration}
    shared = [(in_calibration[e.digest], e.name) for e in evaluation if e.digest in in_calibration]
    if shared:
        pairs = "; ".join(f"{a} = {b}" for a, b in shared[:5])
        raise SplitOverlapError(f"{len(shared)} evaluation clip(s) also in the calibration split (same audio): "
                                f"{pairs}{' ...' if len(shared) > 5 else ''}")


class AudioDataModule(L.LightningDataModule):
    """Both splits of the `dataset` config for one model adapter; `setup()` reads and checks them."""

    def __init__(self, cfg: Mapping, adapter: ModelAdapter):
        super().__init__()
        if cfg["source"] not in SOURCES:
            raise ValueError(f"dataset.source must be one of {SOURCES}, got {cfg['source']!r}")
        self.cfg = dict(cfg)
        self.adapter = adapter
        self.target_column = cfg.get("target_column") or default_target_column(adapter.task)
        self.calibration: list[Example] = []
        self.evaluation: list[Example] = []
        self.bad_files: list[BadFile] = []

    def _read(self, path: Path) -> np.ndarray:
        return load_audio(path, self.adapter.sampling_rate, expected_rate=self.cfg["expected_rate"],
                          stereo=self.cfg["stereo"], max_seconds=self.cfg["max_seconds"])

    def entries(self, split: str, require_targets: bool) -> list[Entry]:
        """Entries of `calibration` or `evaluation` from the configured source."""
        cfg = self.cfg
        name = cfg[f"{split}_split"]
        if cfg["source"] == "hub":
            return hub_entries(str(cfg["path"]), cfg.get("hub_config"), name, cfg["audio_column"],
                               self.target_column, dict(cfg.get(f"{split}_filter") or {}), self._read)
        root = bundled_path(cfg["path"]) if cfg["source"] == "bundled" else Path(cfg["path"])
        return folder_entries(root / name, self.target_column, self._read, require_targets)

    def setup(self, stage: str | None = None) -> None:
        """Read the calibration draw and the evaluation clips; check they are disjoint."""
        cfg = self.cfg
        calibration = self.entries("calibration", require_targets=False)
        order = np.random.default_rng(cfg["calibration_seed"]).permutation(len(calibration))
        self.calibration, bad = read_entries([calibration[i] for i in order], cfg["calibration_size"],
                                             cfg["on_bad_file"])
        self.evaluation, bad_eval = read_entries(self.entries("evaluation", require_targets=True),
                                                 cfg["eval_limit"], cfg["on_bad_file"])
        self.bad_files = bad + bad_eval
        if not self.calibration or not self.evaluation:
            raise ValueError(f"data set {cfg['name']!r}: {len(self.calibration)} calibration and "
                             f"{len(self.evaluation)} evaluation clips left; both splits need at least one")
        check_disjoint(self.calibration, self.evaluation)
        log.info("data: %d calibration clips, %d evaluation clips, %d bad files", len(self.calibration),
                 len(self.evaluation), len(self.bad_files))

    def loader(self, examples: Sequence[Example], targets: Sequence[str] | None = None) -> DataLoader:
        """Batches of `examples` in order; `targets` replaces the examples' own (e.g. FP pseudo-labels)."""
        if targets is not None:
            examples = [Example(e.name, e.audio, t, e.digest) for e, t in zip(examples, targets, strict=True)]
        return DataLoader(list(examples), batch_size=self.cfg["batch_size"], shuffle=False,
                          collate_fn=partial(collate, self.adapter))

    def calibration_dataloader(self, targets: Sequence[str] | None = None, pack: bool = False) -> DataLoader:
        """Calibration batches; unlabelled clips need `targets` where the model's forward needs them.

        With `pack`, clips are packed into the model's fixed input window when it has one (Whisper's 30 s).
        """
        examples = self.calibration
        if targets is not None:
            examples = [Example(e.name, e.audio, t, e.digest) for e, t in zip(examples, targets, strict=True)]
        window = self.adapter.input_window_samples
        if pack and window:
            from esc.data.packing import pack_examples

            examples = pack_examples(examples, window, self.adapter.sampling_rate)
        return self.loader(examples)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.evaluation)


def collate(adapter: ModelAdapter, examples: Sequence[Example]) -> dict:
    """A batch: model inputs (with encoded targets when every clip has one), clip names and targets."""
    targets = [e.target for e in examples]
    labelled = all(t is not None for t in targets)
    return {"inputs": adapter.collate([e.audio for e in examples], targets if labelled else None),
            "names": [e.name for e in examples], "targets": targets}
