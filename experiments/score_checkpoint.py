"""Score a trained keyword checkpoint on labelled audiofolder splits, overall and per voice.

    python experiments/score_checkpoint.py CHECKPOINT_DIR heldout=/data/keywords/evaluation asterisk=/data/ast/...
    python experiments/score_checkpoint.py CHECKPOINT_DIR heldout=... --update   # also into its metrics.json

Prints one line per split and voice. With --update the scores replace those of the same names in the checkpoint's
metrics.json (what `esc.train` wrote), so a checkpoint trained before a split existed can be scored on it later.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from esc.models.registry import trained_classifier
from esc.train import score_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a folder written by esc.train (config.json, metrics.json)")
    parser.add_argument("splits", nargs="+", help="NAME=SPLIT_DIR, a labelled audiofolder split")
    parser.add_argument("--family", choices=("ast", "wav2vec2"), help="default: from config.json's model_type")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--update", action="store_true", help="write the scores into the checkpoint's metrics.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    adapter = trained_classifier(args.checkpoint, args.family)
    adapter.model.eval()
    scores = {}
    for spec in args.splits:
        name, sep, split_dir = spec.partition("=")
        if not sep:
            parser.error(f"{spec!r} is not NAME=SPLIT_DIR")
        with torch.no_grad():
            scores[name] = score_folder(adapter, split_dir, args.batch_size)
        print(f"{name}: accuracy {scores[name]['accuracy']:.4f} on {scores[name]['n']} clips")
        for voice, value in (scores[name]["by_voice"] or {}).items():
            print(f"  {voice}: {value:.4f}")
    if args.update:
        path = args.checkpoint / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["scores"] = {**metrics.get("scores", {}), **scores}
        path.write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
