"""Per-clip word errors and the paired bootstrap interval of a WER change (esc.metrics)."""

import pytest

from esc.metrics import error_rates, wer_change_interval, word_errors

REFERENCES = [f"please press {w} now" for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")] * 5


def test_word_errors_sum_to_the_corpus_wer():
    hypotheses = ["please press 1 now", "press two", "please press three now now", "please pass four now"] * 10
    edits, words = word_errors(hypotheses, REFERENCES)
    assert list(edits[:4]) == [0, 2, 1, 1] and list(words[:4]) == [4, 4, 4, 4]
    assert edits.sum() / words.sum() == pytest.approx(error_rates(hypotheses, REFERENCES)["wer"])
    with pytest.raises(ValueError, match="3 hypotheses for 40 references"):
        word_errors(hypotheses[:3], REFERENCES)


def test_interval_is_zero_for_identical_systems_and_excludes_zero_for_a_much_worse_one():
    fp = [r if i % 4 else r.replace("press", "pass") for i, r in enumerate(REFERENCES)]  # one error in 4 clips
    assert wer_change_interval(fp, fp, REFERENCES) == (0.0, 0.0)
    worse = [h if i % 2 else h.replace("now", "") for i, h in enumerate(fp)]  # one more error in every other clip
    low, high = wer_change_interval(fp, worse, REFERENCES)
    assert 0 < low < 2.0 < high  # the point change is +200%
    assert wer_change_interval(fp, worse, REFERENCES) == (low, high)  # same seed, same interval
    one_more = worse[:1] + fp[1:]  # a single extra error: not told from zero
    low, high = wer_change_interval(fp, one_more, REFERENCES)
    assert low <= 0 < high


def test_interval_refuses_an_error_free_reference_system():
    with pytest.raises(ValueError, match="error-free"):
        wer_change_interval(REFERENCES, REFERENCES, REFERENCES)
