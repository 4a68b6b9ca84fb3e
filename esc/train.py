"""`python -m esc.train model=<scratch model> dataset=folder dataset.path=<keyword set>`: train a small FP model.

Trains on the data set's calibration split, validates on its evaluation split (held-out voices) after every
epoch, optionally scores the result on further labelled sets (`score_on`, e.g. the real asterisk keywords), and
saves a `from_pretrained`-loadable checkpoint (model + feature extractor, safetensors) with `metrics.json` into
`out`.
"""

from __future__ import annotations

import json
import logging
import operator
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import WeightAveraging
from omegaconf import DictConfig, OmegaConf
from torch.optim.swa_utils import get_ema_avg_fn
from torch.utils.data import DataLoader

from esc.augment import AugmentConfig
from esc.data.audio import load_audio
from esc.data.datamodule import AudioDataModule, Example, read_entries
from esc.data.folders import read_metadata
from esc.data.sources import folder_entries
from esc.metrics import accuracy
from esc.models.base import ModelAdapter
from esc.models.registry import build_adapter
from esc.training import CachedInputs, ClassifierTraining, EpochLog, cache_inputs

log = logging.getLogger(__name__)


def accuracy_by_voice(split_dir: str | Path, predictions: dict[str, str],
                      correct: Callable[[str, str], bool] = operator.eq) -> dict[str, float] | None:
    """Accuracy per speaker (the metadata's `voice` column, as the generated sets write it) of `predictions`
    (file name -> prediction), a clip counting when `correct(prediction, label)`; None when the split's metadata has
    no such column.

    A held-out-voice mean hides which voice fails; this is what says so."""
    rows = [r for r in read_metadata(split_dir) if Path(r["file_name"]).name in predictions]
    if not rows or "voice" not in rows[0]:
        return None
    hits = defaultdict(list)
    for row in rows:
        hits[row["voice"]].append(correct(predictions[Path(row["file_name"]).name], row["label"]))
    return {voice: sum(h) / len(h) for voice, h in sorted(hits.items())}


def score_examples(adapter: ModelAdapter, examples: Sequence[Example], split_dir: str | Path,
                   batch_size: int) -> dict:
    """Accuracy of the adapter's predictions (over all its labels) on labelled clips read from the audiofolder
    split `split_dir`, overall and per voice where the split's metadata names voices."""
    predictions = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        predictions += adapter.predict(adapter.collate([e.audio for e in chunk]))
    references = [e.target for e in examples]
    by_name = dict(zip((Path(e.name).name for e in examples), predictions))
    return {"accuracy": accuracy(predictions, references), "n": len(examples),
            "by_voice": accuracy_by_voice(split_dir, by_name), "predictions": by_name}


def labelled_examples(split_dir: str | Path, sampling_rate: int) -> list[Example]:
    """Every good clip of a labelled audiofolder split, read at `sampling_rate` (bad files are skipped)."""
    read = partial(load_audio, sampling_rate=sampling_rate)
    examples, _ = read_entries(folder_entries(split_dir, "label", read, require_targets=True), None, "skip")
    return examples


def score_folder(adapter: ModelAdapter, split_dir: str | Path, batch_size: int) -> dict:
    """`score_examples` on every good clip of a labelled audiofolder split."""
    return score_examples(adapter, labelled_examples(split_dir, adapter.sampling_rate), split_dir, batch_size)


def weight_averaging(decay: float) -> list[L.Callback]:
    """The callbacks that keep an exponential moving average of the weights (none when `decay` is 0).

    Lightning's callback swaps the average in for validation and copies it into the model when training ends, so
    what is validated and saved is the average. Buffers are not averaged: these models have no batch statistics,
    and an average of integer buffers (position ids) would be rounded down when copied back."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {decay}")
    return [WeightAveraging(avg_fn=get_ema_avg_fn(decay), use_buffers=False)] if decay else []


def train(cfg: DictConfig, command: str | None = None) -> dict:
    """Train the configured model; return and save the final metrics (with `command`, when given)."""
    averaging = weight_averaging(cfg.ema_decay)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    adapter = build_adapter(model_cfg)
    if adapter.task != "classification":
        raise ValueError(f"esc.train trains classifiers; model {model_cfg['name']!r} is a {adapter.task} model")
    data = AudioDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), adapter)
    data.setup()
    start = time.perf_counter()
    train_loader = DataLoader(CachedInputs(cache_inputs(adapter, data.calibration)), batch_size=cfg.batch_size,
                              shuffle=True)
    val_loader = DataLoader(CachedInputs(cache_inputs(adapter, data.evaluation)), batch_size=cfg.batch_size)
    module = ClassifierTraining(adapter, cfg.lr, cfg.weight_decay, cfg.warmup_fraction,
                                AugmentConfig(**cfg.augment), cfg.label_smoothing, cfg.mixup, cfg.seed)
    trainer = L.Trainer(max_epochs=cfg.epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                        num_sanity_val_steps=0, deterministic=True, callbacks=[EpochLog(), *averaging])
    trainer.fit(module, train_loader, val_loader)
    seconds = time.perf_counter() - start
    adapter.model.eval()
    out = Path(cfg.out)
    adapter.model.save_pretrained(out)
    adapter.processor.save_pretrained(out)
    scores = {name: score_folder(adapter, path, cfg.batch_size) for name, path in cfg.score_on.items()
              if path is not None}
    if cfg.dataset.source == "folder":  # the validation clips (already read) again, for accuracy per held-out voice
        scores["heldout"] = score_examples(adapter, data.evaluation,
                                           Path(cfg.dataset.path) / cfg.dataset.evaluation_split, cfg.batch_size)
    metrics = {"model": model_cfg["name"], "val_accuracy": float(trainer.callback_metrics["val_accuracy"]),
               "n_train": len(data.calibration), "n_val": len(data.evaluation), "epochs": cfg.epochs,
               "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(),
               "parameters": sum(p.numel() for p in adapter.model.parameters()),
               "scores": scores,
               "command": command}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("trained %s: val accuracy %.4f in %.0f s -> %s", metrics["model"], metrics["val_accuracy"], seconds, out)
    for name, score in metrics["scores"].items():
        log.info("%s accuracy %.4f on %d clips; by voice: %s", name, score["accuracy"], score["n"], score["by_voice"])
    return metrics


def command_line(overrides: Sequence[str]) -> str:
    """The command that reproduces a run, from its Hydra overrides."""
    return " ".join(["python -m esc.train", *overrides])


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    metrics = train(cfg, command_line(HydraConfig.get().overrides.task))
    print(f"{metrics['model']}: val_accuracy={metrics['val_accuracy']:.4f} "
          f"train_seconds={metrics['train_seconds']} -> {cfg.out}")


if __name__ == "__main__":
    main()
