"""Task metrics: accuracy, and WER/CER with one text normaliser applied to reference and hypothesis alike.

The normaliser lower-cases, spells digits out as English words (so "7" and "seven" agree; "$2 million" reads
"two million dollars", "3.5" reads "three point five"), turns hyphens
and slashes into spaces, strips all other punctuation except apostrophes inside words, and collapses
whitespace.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import jiwer
import numpy as np

from esc.text import LIMIT, number_to_words

log = logging.getLogger(__name__)

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
    refs, hyps = _normalised(hypotheses, references)
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}


def _normalised(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not references:
        raise ValueError("no references to score")
    return [normalize_text(r) or "<empty>" for r in references], [normalize_text(h) for h in hypotheses]


def word_errors(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: word edits (substitutions + deletions + insertions) and reference words, normalised as for WER.

    Their sums give the corpus WER of `error_rates`; kept apart they allow resampling clips."""
    refs, hyps = _normalised(hypotheses, references)
    edits, words = [], []
    for ref, hyp in zip(refs, hyps):
        out = jiwer.process_words(ref, hyp)
        edits.append(out.substitutions + out.deletions + out.insertions)
        words.append(len(ref.split()))
    return np.array(edits), np.array(words)


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """Fraction of predictions equal to their reference."""
    if len(predictions) != len(references) or not references:
        raise ValueError(f"accuracy needs equal, non-empty lists ({len(predictions)} vs {len(references)})")
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


def task_scores(metric: str, predictions: Sequence, references: Sequence) -> dict[str, float]:
    """The scores of a task whose main metric is `metric`: {"accuracy"} for classifiers, {"wer", "cer"} otherwise."""
    if metric == "accuracy":
        return {"accuracy": accuracy(predictions, references)}
    return error_rates(predictions, references)


def change_interval(fp_values: np.ndarray, values: np.ndarray, resamples: int = 2000, level: float = 0.95,
                    seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap interval of `sum(values) / sum(fp_values) - 1` over clips (per-clip word edits: the relative
    WER change; per-clip correctness: the relative accuracy change).

    Clips are resampled with replacement, the same draw for both systems (so what they share cancels), and the
    change is recomputed per draw; returns its (1 - level) / 2 and (1 + level) / 2 quantiles. It says how far a
    measured change can be told from zero on this many clips."""
    draws = np.random.default_rng(seed).integers(0, len(fp_values), size=(resamples, len(fp_values)))
    fp_total = np.asarray(fp_values)[draws].sum(1)
    if (fp_total == 0).any():
        raise ValueError("the FP total is zero on a resampled set of clips; the relative change is undefined")
    change = np.asarray(values)[draws].sum(1) / fp_total - 1
    tail = (1 - level) / 2
    return float(np.quantile(change, tail)), float(np.quantile(change, 1 - tail))


def relative_change_interval(metric: str, fp_predictions: Sequence[str], predictions: Sequence[str],
                             references: Sequence[str]) -> tuple[float, float]:
    """95% paired bootstrap interval of the relative change of `metric` ("wer" or "accuracy") against FP."""
    if metric == "wer":
        (fp_values, _), (values, _) = word_errors(fp_predictions, references), word_errors(predictions, references)
    elif metric == "accuracy":
        fp_values = np.array([p == r for p, r in zip(fp_predictions, references, strict=True)], dtype=float)
        values = np.array([p == r for p, r in zip(predictions, references, strict=True)], dtype=float)
    else:
        raise ValueError(f"no change interval for metric {metric!r} (wer or accuracy)")
    return change_interval(fp_values, values)


def relative_change_interval_or_none(metric: str, fp_predictions: Sequence[str], predictions: Sequence[str],
                                     references: Sequence[str]) -> tuple[float, float] | None:
    """`relative_change_interval`, or None where it is undefined (FP without a single error or hit on some resample,
    which few clips make likely, or a metric without one): the change itself still stands without it."""
    try:
        return relative_change_interval(metric, fp_predictions, predictions, references)
    except ValueError as err:
        log.info("no interval for the relative change: %s", err)
        return None
