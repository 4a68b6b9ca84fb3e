"""Cost of fake quantization and of the statistics pass, per model family.

    python experiments/bench_overhead.py [--real] [--repeats 10] [--threads 2]

Prints one line per model: `model fp_ms fakequant_ms ratio stats_pass_ms` (medians over repeats; W8A8 full
placement, per-channel weights, per-tensor static activations, attention matmul inputs included). Goals:
fake-quantized forward at most 1.5x the FP forward, statistics pass at most 2x.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from esc.calib.minmax import MinMaxCalibrator
from esc.calib.stats import collect_statistics
from esc.models.registry import build_adapter
from esc.quant.model import quantize_model, set_enabled
from esc.quant.placement import Placement

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ("ast_tiny", "wav2vec2_kws_tiny", "wav2vec2_ctc_tiny", "whisper_tiny")


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, cached quantized weights)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench(model_name: str, repeats: int, seconds: float, batch_size: int) -> str:
    model_cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{model_name}.yaml"), resolve=True)
    adapter = build_adapter(model_cfg)
    rng = np.random.default_rng(0)
    audios = [(0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) for _ in range(batch_size)]
    targets = None
    if adapter.task == "classification":
        targets = [adapter.labels[i % len(adapter.labels)] for i in range(batch_size)]
    elif adapter.task == "seq2seq":
        targets = ["the quick brown fox jumps over the lazy dog"] * batch_size
    batch = adapter.collate(audios, targets)
    with torch.no_grad():
        fp_ms = median_ms(lambda: adapter.forward(batch), repeats)
        placement = Placement.from_config(OmegaConf.to_container(OmegaConf.load(CONF / "quant" / "w8a8.yaml")))
        quantize_model(adapter.model, placement)
        MinMaxCalibrator().calibrate(adapter.model, lambda m: adapter.forward(batch))
        fq_ms = median_ms(lambda: adapter.forward(batch), repeats)
        set_enabled(adapter.model, True)
        stats_ms = median_ms(lambda: collect_statistics(adapter.model, lambda m: adapter.forward(batch)), repeats)
    return f"{model_name} {fp_ms:.2f} {fq_ms:.2f} {fq_ms / fp_ms:.2f} {stats_ms:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", action="store_true", help="also the real Whisper tiny.en (30 s input)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("model fp_ms fakequant_ms ratio stats_pass_ms")
    for name in TINY:
        print(bench(name, args.repeats, 1.0, args.batch_size), flush=True)
    if args.real:
        print(bench("whisper_tiny_en", max(3, args.repeats // 3), 5.0, 1), flush=True)


if __name__ == "__main__":
    main()
