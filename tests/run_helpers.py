"""Composing `esc.run` configs in tests, building seeded models from them, running the CLI in a subprocess, and
loading `experiments/` scripts."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from esc.models.base import ModelAdapter
from esc.models.registry import build_adapter
from esc.results import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
register_resolvers()


def compose_run(*overrides: str, hydra: bool = False):
    """The composed run config for `overrides`, as `python -m esc.run` would see it."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def seeded_model(name: str, **fields) -> ModelAdapter:
    """The model config `conf/model/<name>.yaml`, top-level `fields` replaced, built after torch.manual_seed(0)
    (random weights of a config model are then the same in every test)."""
    torch.manual_seed(0)
    return build_adapter(OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{name}.yaml")) | fields)


def run_cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `python -m <module> <args>` offline with two threads; raise with its output when it fails."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_SILENT": "true",
                        "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{module} {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def load_experiment(name: str):
    """The module of `experiments/<name>.py` (a script folder, not a package), for tests of its functions."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
