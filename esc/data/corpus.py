"""Texts to synthesize: composed English sentences and the Speech Commands keywords.

Sentences come from the template grammar in `esc.data.grammar`, drawn deterministically from a seed. Numbers are
spelled out because a TTS engine's reading of digits ("1995", "3.5") is engine-specific, while a transcript must say
exactly what was spoken.
"""

from __future__ import annotations

import re

import numpy as np

from esc.data.grammar import SLOTS, TEMPLATES
from esc.text import ONES, number_to_words

# The 35 words of Speech Commands v2 (Warden, 2018), in its label order.
KEYWORDS = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go", "happy",
    "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven", "sheila", "six", "stop",
    "three", "tree", "two", "up", "visual", "wow", "yes", "zero",
)

MIN_WORDS, MAX_WORDS = 5, 20

_SLOT = re.compile(r"\{(\w+)(?::(\d+)-(\d+))?\}")


def year_to_words(year: int) -> str:
    """A year as it is read aloud: 1995 "nineteen ninety five", 1905 "nineteen oh five", 2007 "two thousand seven",
    2026 "twenty twenty six"."""
    if not 1100 <= year <= 2099:
        raise ValueError(f"year_to_words covers 1100..2099, got {year}")
    century, rest = divmod(year, 100)
    if 2000 <= year < 2010:
        return number_to_words(year)
    if rest == 0:
        return f"{number_to_words(century)} hundred"
    return f"{number_to_words(century)} " + (f"oh {ONES[rest]}" if rest < 10 else number_to_words(rest))


def fill(template: str, rng: np.random.Generator) -> str:
    """One sentence from `template`: slots filled from `rng`, first letter capitalized."""
    used: dict[str, set[str]] = {}

    def choose(match: re.Match) -> str:
        name, low, high = match.groups()
        if low is not None:
            value = int(rng.integers(int(low), int(high) + 1))
            return year_to_words(value) if name == "year" else number_to_words(value)
        # Two "{city}" slots in one template ("from {city} to {city}") must not pick the same filler.
        options = [f for f in SLOTS[name] if f not in used.setdefault(name, set())]
        filler = options[int(rng.integers(len(options)))]
        used[name].add(filler)
        return filler

    text = template
    while _SLOT.search(text):  # fillers may hold slots themselves ("on {day} evening")
        text = _SLOT.sub(choose, text, count=1)
    return text[0].upper() + text[1:]


def compose_sentences(n: int, seed: int) -> list[str]:
    """`n` distinct sentences of MIN_WORDS..MAX_WORDS words, deterministic in `seed`.

    Templates are visited in shuffled rounds so every template contributes about equally; a template that keeps
    producing sentences already drawn (a fixed sentence, a small slot space) drops out.
    """
    rng = np.random.default_rng(seed)
    sentences: list[str] = []
    seen: set[str] = set()
    live = list(TEMPLATES)
    while len(sentences) < n:
        if not live:
            raise ValueError(f"the grammar yields fewer than {n} distinct sentences ({len(sentences)})")
        for template in [live[i] for i in rng.permutation(len(live))]:
            for _ in range(20):
                sentence = fill(template, rng)
                if sentence not in seen and MIN_WORDS <= len(sentence.split()) <= MAX_WORDS:
                    break
            else:
                live.remove(template)
                continue
            seen.add(sentence)
            sentences.append(sentence)
            if len(sentences) == n:
                break
    return sentences
