"""How well the real Whisper tiny.en hears each voice of a keyword split: a voice-by-voice intelligibility check.

    python experiments/whisper_keywords.py /data/keywords/evaluation [--out predictions.json]

Whisper transcribes every clip (greedy, FP); a clip counts as heard when its label is one of the normalised words of
the transcript (digits are written out by the normaliser, so "8." hears "eight"). Whisper was never trained on
isolated one-second words, so the absolute numbers are low; what the check tells is whether one voice is harder to
hear than the others for a recogniser trained on real speech, or only for the small models trained here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from esc.data.audio import load_audio
from esc.data.folders import read_metadata
from esc.metrics import normalize_text
from esc.models.whisper import WhisperAdapter
from esc.train import accuracy_by_voice


def heard(transcript: str, label: str) -> bool:
    """Whether `label` is one of the normalised words of `transcript`."""
    return label in normalize_text(transcript).split()


def heard_by_voice(split: Path, batch_size: int = 16) -> tuple[dict[str, float], dict[str, str]]:
    """Share of clips per voice (and "all") whose label Whisper's transcript contains, and every transcript."""
    rows = read_metadata(split)
    adapter = WhisperAdapter.from_ct2(None)
    adapter.model.eval()
    transcripts = {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        audios = [load_audio(split / row["file_name"], adapter.sampling_rate) for row in chunk]
        with torch.no_grad():
            transcripts |= zip((row["file_name"] for row in chunk), adapter.predict(adapter.collate(audios)))
    shares = accuracy_by_voice(split, transcripts, correct=heard) or {}
    shares["all"] = sum(heard(transcripts[row["file_name"]], row["label"]) for row in rows) / len(rows)
    return shares, transcripts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split", type=Path, help="a labelled audiofolder split (metadata.csv with label, voice)")
    parser.add_argument("--out", type=Path, help="write every transcript here (JSON, by file name)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shares, transcripts = heard_by_voice(args.split)
    for voice, share in shares.items():
        print(f"{voice}: {share:.3f}")
    if args.out:
        args.out.write_text(json.dumps(transcripts, indent=1))


if __name__ == "__main__":
    main()
