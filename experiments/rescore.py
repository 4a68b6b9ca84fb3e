"""Re-score finished runs on a subset of their evaluation clips, from their saved predictions.

An evaluation of the 366 real Asterisk prompts costs half an hour a run on this machine. When the prompts are later
split (`python -m esc.data.asterisk --calibration-prompts N`), the earlier runs need not be evaluated again to be
compared on the new evaluation split: their `predictions.json` already holds every transcript. This prints the run's
metric (WER, corpus level with the run's own normaliser, or accuracy), the change against FP with its 95% paired
bootstrap interval over clips (how far it can be told from zero), and the agreement with the FP predictions, on the
clips of SPLIT only (matched by file name; SPLIT may also be the run's whole evaluation split, which gives runs
measured before results.json had the interval theirs). The teacher-forced KL is a sum over all clips that the runs
do not store per clip, so it is not re-scored.

    python experiments/rescore.py SPLIT_DIR RUN_DIR [RUN_DIR ...] [--first N]

`--first N` takes the split's first N clips, as `dataset.eval_limit=N` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from esc.data.folders import read_metadata
from esc.data.sources import default_target_column
from esc.metrics import relative_change_interval_or_none, task_scores


def by_file_name(predictions: dict[str, str]) -> dict[str, str]:
    """Predictions keyed by file name instead of full path; refuses two clips of one name."""
    named = {Path(path).name: text for path, text in predictions.items()}
    if len(named) != len(predictions):
        raise ValueError("two predicted clips share a file name; cannot match them to the split by name")
    return named


def rescore(split_dir: Path, run_dir: Path, first: int | None = None) -> dict[str, float | str]:
    """FP and quantized metric of `run_dir` on the (first) clips of `split_dir`, change, interval and agreement."""
    results = json.loads((run_dir / "results.json").read_text())
    metric = results["metric"]
    rows = read_metadata(split_dir)[:first]
    saved = json.loads((run_dir / "predictions.json").read_text())
    fp, quantized = by_file_name(saved["fp"]), by_file_name(saved["quantized"])
    missing = [r["file_name"] for r in rows if r["file_name"] not in quantized or r["file_name"] not in fp]
    if missing:
        raise ValueError(f"{run_dir}: no prediction for {len(missing)} clip(s) of {split_dir}, e.g. {missing[:3]}")
    names = [r["file_name"] for r in rows]
    column = default_target_column("classification" if metric == "accuracy" else "recognition")
    references = [r[column] for r in rows]
    fp_list, quantized_list = [fp[n] for n in names], [quantized[n] for n in names]
    # the run's metric, as the run computed it
    fp_value = task_scores(metric, fp_list, references)[metric]
    value = task_scores(metric, quantized_list, references)[metric]
    low, high = relative_change_interval_or_none(metric, fp_list, quantized_list, references) or (None, None)
    # calibrator=saved names the run whose scales it evaluated
    calibrator = results["calibrator_options"].get("path") or results["calibrator"]
    return {"run": str(run_dir), "calibrator": calibrator, "metric": metric, "clips": len(names), "fp": fp_value,
            "quantized": value, "change": value / fp_value - 1, "change_low": low, "change_high": high,
            "agreement": sum(q == f for q, f in zip(quantized_list, fp_list)) / len(names)}


def main(argv: list[str] | None = None) -> None:
    """Command line: one line per run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split", type=Path,
                        help="evaluation folder (metadata.csv with file_name, and transcription or label)")
    parser.add_argument("runs", type=Path, nargs="+", help="run folders with predictions.json and results.json")
    parser.add_argument("--first", type=int, help="only the split's first N clips (as dataset.eval_limit)")
    args = parser.parse_args(argv)
    print("run calibrator metric clips fp quantized change change_95%_interval agreement")
    for run_dir in args.runs:
        if not (run_dir / "predictions.json").is_file():
            print(f"{run_dir}: no predictions.json (unfinished run?), left out")
            continue
        r = rescore(args.split, run_dir, args.first)
        interval = "-" if r["change_low"] is None else f"[{r['change_low']:+.3f},{r['change_high']:+.3f}]"
        print(f"{r['run']} {r['calibrator']} {r['metric']} {r['clips']} {r['fp']:.4f} {r['quantized']:.4f} "
              f"{r['change']:+.3f} {interval} {r['agreement']:.3f}")


if __name__ == "__main__":
    main()
