"""Training tiny classifiers with esc.train from the shipped train config (tests of training options)."""

from __future__ import annotations

from dataclasses import fields

import torch
from audio_folders import write_folder
from hydra import compose, initialize_config_dir
from run_helpers import CONF
from safetensors.torch import load_file

from esc.augment import AugmentConfig
from esc.train import train

NO_AUGMENT = [f"augment.{f.name}=0" for f in fields(AugmentConfig)] + ["label_smoothing=0", "mixup=0"]


def compose_train(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def train_tiny(tmp_path, *overrides: str, model: str = "ast_tiny") -> tuple[dict, dict[str, torch.Tensor]]:
    """Two epochs of `model` on a tiny folder; the metrics and the saved weights."""
    data = tmp_path / "data"
    if not data.exists():
        write_folder(data, n_calibration=8, n_evaluation=4)
    out = tmp_path / "out"
    cfg = compose_train(f"model={model}", f"dataset.path={data}", "epochs=2", "batch_size=4", "threads=1",
                        f"out={out}", f"score_on.asterisk={data / 'evaluation'}", *overrides)
    return train(cfg, command="python -m esc.train ..."), load_file(out / "model.safetensors")
