"""Task metrics: accuracy, and WER/CER with one text normaliser applied to reference and hypothesis alike.

The normaliser lower-cases, spells digits out as English words (so "7" and "seven" agree), turns hyphens
and slashes into spaces, strips all other punctuation except apostrophes inside words, and collapses
whitespace.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jiwer

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
        "seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """English words for a non-negative integer below one billion (e.g. 42 -> 'forty two')."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, word in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = n % size
            return f"{number_to_words(n // size)} {word}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def normalize_text(text: str) -> str:
    """The normalised form used for every WER/CER (see module docstring)."""
    text = text.lower().replace("%", " percent ")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(r"\d+", lambda m: f" {number_to_words(int(m.group())) if len(m.group()) < 10 else m.group()} ",
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
