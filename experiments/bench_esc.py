"""Cost of ESC's fitness evaluations, and whether scoring a whole population in one batched forward pays.

    python experiments/bench_esc.py [--real] [--repeats 10] [--threads 2] [--popsize 8] [--batch-size 2]
                                    [--models ast_kws,wav2vec2_kws]

Per model (tiny ones built from configs, the bundled trained keyword models, and with --real Whisper tiny.en;
W8A8, calibration batch of 2 random 1 s clips, KL fitness), medians over repeats:
  forward_ms   a plain quantized forward of the batch
  fitness_ms   one fitness evaluation of that batch (write all scales in place, forward, KL against cached FP)
  ratio        fitness_ms / forward_ms (goal: at most ~1.2)
  evals_per_s  evaluations per second in a short ESC search (3 generations, --popsize)
  seq_ms       --popsize candidates scored one after another (write the scales, fitness)
  tiled_ms     the same candidates scored in one forward of the batch tiled --popsize times, every searched
               quantizer holding one scale per candidate (esc.calib.population.score_population)
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from bench_common import arguments, load_adapter, median_ms, model_names, random_batch, w8a8_placement

from esc.calib.esc import ESCCalibrator
from esc.calib.population import score_population
from esc.calib.scale_vector import ScaleVector
from esc.quant.model import quantize_model

TINY = ("ast_tiny", "wav2vec2_ctc_tiny", "whisper_tiny")
TRAINED = ("ast_kws", "wav2vec2_kws")  # the bundled keyword models the study's tables are measured on


def bench(model_name: str, repeats: int, popsize: int, seconds: float, batch_size: int) -> str:
    adapter = load_adapter(model_name)
    batch = random_batch(adapter, seconds, batch_size)
    quantize_model(adapter.model, w8a8_placement())
    calibrator = ESCCalibrator(popsize=popsize, max_generations=3)
    fitness = calibrator.bind(adapter, [batch])
    with torch.no_grad():
        calibrator.calibrate(adapter.model, lambda m: adapter.forward(batch))
        rate = statistics.median(h["evals_per_s"] for h in calibrator.history)
        scales = ScaleVector(adapter.model)
        x = np.full(len(scales), 0.01)
        forward_ms = median_ms(lambda: adapter.forward(batch), repeats)
        fitness_ms = median_ms(lambda: (scales.write(x), fitness(adapter.model)), repeats)

        candidates = np.random.default_rng(0).normal(0.0, 0.1, (popsize, len(scales)))

        def sequential():
            for c in candidates:
                scales.write(c)
                fitness(adapter.model)

        seq_ms = median_ms(sequential, max(1, repeats // 2))
        tiled_ms = median_ms(lambda: score_population(fitness, adapter.model, scales, candidates),
                             max(1, repeats // 2))
    return (f"{model_name} {forward_ms:.2f} {fitness_ms:.2f} {fitness_ms / forward_ms:.2f} {rate:.1f} "
            f"{seq_ms:.1f} {tiled_ms:.1f}")


def main() -> None:
    args = arguments(__doc__, popsize=8)
    torch.set_num_threads(args.threads)
    print("model forward_ms fitness_ms ratio evals_per_s seq_ms tiled_ms")
    for name in model_names(args, TINY + TRAINED):
        print(bench(name, args.repeats, args.popsize, 1.0, args.batch_size), flush=True)
    if args.real:
        print(bench("whisper_tiny_en", max(3, args.repeats // 3), args.popsize, 5.0, 1), flush=True)


if __name__ == "__main__":
    main()
