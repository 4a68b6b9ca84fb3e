"""Texts for synthesis (esc.data.corpus): numbers in words and the composed sentences."""

import re

import pytest

from esc.data.corpus import KEYWORDS, MAX_WORDS, MIN_WORDS, compose_sentences, number_to_words, year_to_words
from esc.data.grammar import SLOTS, TEMPLATES


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (13, "thirteen"), (20, "twenty"), (42, "forty two"), (100, "one hundred"),
    (101, "one hundred one"), (342, "three hundred forty two"), (1000, "one thousand"),
    (12345, "twelve thousand three hundred forty five"),
])
def test_number_to_words(n, words):
    assert number_to_words(n) == words


@pytest.mark.parametrize("year, words", [
    (1820, "eighteen twenty"), (1900, "nineteen hundred"), (1905, "nineteen oh five"),
    (1995, "nineteen ninety five"), (2000, "two thousand"), (2007, "two thousand seven"),
    (2026, "twenty twenty six"),
])
def test_year_to_words(year, words):
    assert year_to_words(year) == words


def test_out_of_range_numbers_raise():
    with pytest.raises(ValueError):
        number_to_words(-1)
    with pytest.raises(ValueError):
        year_to_words(2100)


def test_sentences_are_distinct_varied_and_deterministic():
    sentences = compose_sentences(400, seed=0)
    assert len(set(sentences)) == 400
    lengths = [len(s.split()) for s in sentences]
    assert min(lengths) >= MIN_WORDS and max(lengths) <= MAX_WORDS
    assert max(lengths) - min(lengths) >= 10  # short and long sentences both present
    assert all(s[0].isupper() and s[-1] in ".?" for s in sentences)
    assert not any(re.search(r"[0-9{}]", s) for s in sentences)  # numbers spelled out, every slot filled
    assert compose_sentences(400, seed=0) == sentences
    assert len(set(compose_sentences(400, seed=1)) ^ set(sentences)) > 200


def test_grammar_slots_exist_and_repeated_slots_differ():
    names = {m for t in TEMPLATES + sum(SLOTS.values(), ()) for m in re.findall(r"\{(\w+)\}", t)}
    assert names <= set(SLOTS)
    for sentence in compose_sentences(400, seed=2):
        match = re.match(r"It took us .* hours to drive from (\w+) to (\w+)\.", sentence)
        if match:
            assert match.group(1) != match.group(2)


def test_too_many_sentences_raise():
    with pytest.raises(ValueError, match="fewer than"):
        compose_sentences(10**7, seed=0)


def test_keywords_are_speech_commands_v2():
    assert len(KEYWORDS) == len(set(KEYWORDS)) == 35
    assert {"marvin", "sheila", "visual", "zero", "nine"} <= set(KEYWORDS)
