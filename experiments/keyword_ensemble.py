"""Do keyword checkpoints miss the same clips? Each one's accuracy, their posterior-averaging ensemble's, and the
clips every one of them misses, overall and per voice, on one labelled split.

    python experiments/keyword_ensemble.py SPLIT_DIR CHECKPOINT CHECKPOINT [...] [--subsets] [--out scores.json]

The ensemble averages the members' log-posteriors (label columns matched by name, so AST and wav2vec2 checkpoints
mix). When it gains little over its best member and most misses are shared by every member, the members fail on
the same clips: training variants on the same data will not close the gap, other data might.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter
from pathlib import Path

import torch

from esc.data.folders import read_metadata
from esc.models.classification import ClassificationAdapter
from esc.models.registry import trained_classifier
from esc.train import accuracy_by_voice, labelled_examples


@torch.no_grad()
def log_posteriors(adapter: ClassificationAdapter, split: Path, labels: list[str],
                   batch_size: int = 32) -> tuple[list[str], list[str], torch.Tensor]:
    """File names, label targets and the adapter's log-posteriors over `labels` (in that order) for every good clip of
    `split`; a model whose labels are not exactly `labels` (in any order) is refused."""
    if sorted(adapter.labels) != sorted(labels):
        raise ValueError(f"{adapter.model.name_or_path}: labels {sorted(adapter.labels)} differ from the first "
                         f"checkpoint's {sorted(labels)}")
    examples = labelled_examples(split, adapter.sampling_rate)
    chunks = [adapter.forward(adapter.collate([e.audio for e in examples[start:start + batch_size]])).float()
              for start in range(0, len(examples), batch_size)]
    columns = [adapter.labels.index(label) for label in labels]
    return ([Path(e.name).name for e in examples], [str(e.target) for e in examples],
            torch.cat(chunks).log_softmax(dim=-1)[:, columns])


def score(split: Path, names: list[str], targets: list[str], labels: list[str], logp: torch.Tensor) -> dict:
    """Accuracy overall and per voice of the arg-max of `logp` (clips x labels)."""
    predictions = dict(zip(names, (labels[i] for i in logp.argmax(dim=-1).tolist())))
    hits = [predictions[name] == target for name, target in zip(names, targets)]
    return {"accuracy": sum(hits) / len(hits), "by_voice": accuracy_by_voice(split, predictions),
            "misses": sorted(name for name, hit in zip(names, hits) if not hit)}


def compare(split: Path, checkpoints: list[Path], subsets: bool = False) -> dict:
    """Scores of every checkpoint, of their ensemble (and with `subsets` of every ensemble of two or more), and the
    clips every checkpoint misses, by voice."""
    adapters = [trained_classifier(path) for path in checkpoints]
    labels = adapters[0].labels
    members = {}
    for path, adapter in zip(checkpoints, adapters):
        adapter.model.eval()
        names, targets, members[str(path)] = log_posteriors(adapter, split, labels)
    scored = {key: score(split, names, targets, labels, logp) for key, logp in members.items()}
    sizes = range(2, len(members) + 1) if subsets else [len(members)]
    groups = [group for size in sizes for group in itertools.combinations(members, size)]
    shared = sorted(set.intersection(*(set(s["misses"]) for s in scored.values())))
    voice = {Path(row["file_name"]).name: row.get("voice", "all") for row in read_metadata(split)}
    shared_by_voice = dict(sorted(Counter(voice[name] for name in shared).items()))
    return {"n": len(names), "members": scored,
            "ensembles": [{"members": list(group),
                           **score(split, names, targets, labels, sum(members[key] for key in group) / len(group))}
                          for group in groups],
            "missed_by_all": {"n": len(shared), "by_voice": shared_by_voice, "clips": shared}}


def _line(name: str, scores: dict) -> str:
    voices = ", ".join(f"{voice} {value:.3f}" for voice, value in (scores["by_voice"] or {}).items())
    return f"{name}: {scores['accuracy']:.4f}" + (f" ({voices})" if voices else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split", type=Path, help="a labelled audiofolder split (metadata.csv with label, voice)")
    parser.add_argument("checkpoints", type=Path, nargs="+", help="folders written by esc.train")
    parser.add_argument("--subsets", action="store_true", help="also every ensemble of two or more")
    parser.add_argument("--out", type=Path, help="write every score and miss here (JSON)")
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        parser.error("an ensemble needs two checkpoints or more")
    torch.set_num_threads(1)
    result = compare(args.split, args.checkpoints, args.subsets)
    for name, scores in result["members"].items():
        print(_line(name, scores))
    for ensemble in result["ensembles"]:
        print(_line("ensemble of " + " + ".join(Path(m).name for m in ensemble["members"]), ensemble))
    shared = result["missed_by_all"]
    print(f"missed by every checkpoint: {shared['n']} of {result['n']} clips {shared['by_voice']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
