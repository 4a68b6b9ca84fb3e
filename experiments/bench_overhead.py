"""Cost of fake quantization and of the statistics pass, per model family.

    python experiments/bench_overhead.py [--real] [--repeats 10] [--threads 2] [--batch-size 2] [--models ast_tiny,...]

Prints one line per model: `model fp_ms fakequant_ms ratio stats_pass_ms` (medians over repeats; W8A8 full
placement, per-channel weights, per-tensor static activations, attention matmul inputs included). Goals:
fake-quantized forward at most 1.5x the FP forward, statistics pass at most 2x.
"""

from __future__ import annotations

import torch
from bench_common import arguments, load_adapter, median_ms, model_names, random_batch, w8a8_placement

from esc.calib.minmax import MinMaxCalibrator
from esc.calib.stats import collect_statistics
from esc.quant.model import quantize_model, set_enabled

TINY = ("ast_tiny", "wav2vec2_kws_tiny", "wav2vec2_ctc_tiny", "whisper_tiny")


def bench(model_name: str, repeats: int, seconds: float, batch_size: int) -> str:
    adapter = load_adapter(model_name)
    batch = random_batch(adapter, seconds, batch_size)
    with torch.no_grad():
        fp_ms = median_ms(lambda: adapter.forward(batch), repeats)
        quantize_model(adapter.model, w8a8_placement())
        MinMaxCalibrator().calibrate(adapter.model, lambda m: adapter.forward(batch))
        fq_ms = median_ms(lambda: adapter.forward(batch), repeats)
        set_enabled(adapter.model, True)
        stats_ms = median_ms(lambda: collect_statistics(adapter.model, lambda m: adapter.forward(batch)), repeats)
    return f"{model_name} {fp_ms:.2f} {fq_ms:.2f} {fq_ms / fp_ms:.2f} {stats_ms:.2f}"


def main() -> None:
    args = arguments(__doc__)
    torch.set_num_threads(args.threads)
    print("model fp_ms fakequant_ms ratio stats_pass_ms")
    for name in model_names(args, TINY):
        print(bench(name, args.repeats, 1.0, args.batch_size), flush=True)
    if args.real:
        print(bench("whisper_tiny_en", max(3, args.repeats // 3), 5.0, 1), flush=True)


if __name__ == "__main__":
    main()
