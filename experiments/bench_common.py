"""What the benchmarks share: timing, a model from its config, a random batch, the W8A8 placement."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from esc.models.base import ModelAdapter
from esc.models.registry import build_adapter
from esc.quant.placement import Placement

CONF = Path(__file__).resolve().parents[1] / "conf"


def median_ms(fn, repeats: int) -> float:
    """Median wall time of `fn()` in ms over `repeats` calls, after one warm-up call (allocations, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def load_adapter(model_name: str) -> ModelAdapter:
    """The model of conf/model/<model_name>.yaml."""
    return build_adapter(OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{model_name}.yaml")))


def random_batch(adapter: ModelAdapter, seconds: float, batch_size: int) -> dict:
    """A collated batch of low-level noise clips with targets (labels, or one English sentence)."""
    rng = np.random.default_rng(0)
    audios = [(0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) for _ in range(batch_size)]
    if adapter.task == "classification":
        targets = [adapter.labels[i % len(adapter.labels)] for i in range(batch_size)]
    else:
        targets = ["the quick brown fox jumps over the lazy dog"] * batch_size
    return adapter.collate(audios, targets)


def w8a8_placement() -> Placement:
    """Full W8A8 placement (conf/quant/w8a8.yaml)."""
    return Placement.from_config(OmegaConf.to_container(OmegaConf.load(CONF / "quant" / "w8a8.yaml")))


def arguments(doc: str, **extra: int) -> argparse.Namespace:
    """The common command line (--real, --repeats, --threads, --batch-size) plus integer options `extra`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="also the real Whisper tiny.en (30 s input)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--models", default=None,
                        help="comma-separated model configs to measure instead of the default list (e.g. ast_kws)")
    for name, default in extra.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    return parser.parse_args()


def model_names(args: argparse.Namespace, default: tuple[str, ...]) -> list[str]:
    """The models a benchmark measures: --models when given, else its `default` list."""
    return args.models.split(",") if args.models else list(default)
