"""Task metrics: accuracy, and WER/CER with one text normaliser applied to reference and hypothesis alike.

The normaliser lower-cases, spells digits out as English words (so "7" and "seven" agree; "$2 million" reads
"two million dollars", "3.5" reads "three point five"), turns hyphens
and slashes into spaces, strips all other punctuation except apostrophes inside words, and collapses
whitespace.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jiwer

from esc.text import LIMIT, number_to_words

def normalize_text(text: str) -> str:
    """The normalised form used for every WER/CER (see module docstring)."""
    text = text.lower().replace("%", " percent ")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(r"\$([\d.]+(?:\s+(?:thousand|million|billion))?)", r"\1 dollars", text)  # $2 million
    text = re.sub(r"(?<=\d)\.(?=\d)", " point ", text)  # 3.5 -> 3 point 5
    text = re.sub(r"\d+", lambda m: f" {number_to_words(int(m.group())) if int(m.group()) < LIMIT else m.group()} ",
                  text)
    text = re.sub(r"[-/]", " ", text)
    text = re.sub(r"[^\w\s']", " ", text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def error_rates(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus-level WER and CER after normalisation (an empty normalised reference counts as one word)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not references:
        raise ValueError("no references to score")
    refs = [normalize_text(r) or "<empty>" for r in references]
    hyps = [normalize_text(h) for h in hypotheses]
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """Fraction of predictions equal to their reference."""
    if len(predictions) != len(references) or not references:
        raise ValueError(f"accuracy needs equal, non-empty lists ({len(predictions)} vs {len(references)})")
    return sum(p == r for p, r in zip(predictions, references)) / len(references)
