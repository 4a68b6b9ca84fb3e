"""Per-clip word errors and the paired bootstrap interval of a WER change (esc.metrics)."""

import pytest

from esc.metrics import error_rates, relative_change_interval, relative_change_interval_or_none, word_errors

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
    assert relative_change_interval("wer", fp, fp, REFERENCES) == (0.0, 0.0)
    worse = [h if i % 2 else h.replace("now", "") for i, h in enumerate(fp)]  # one more error in every other clip
    low, high = relative_change_interval("wer", fp, worse, REFERENCES)
    assert 0 < low < 2.0 < high  # the point change is +200%
    assert relative_change_interval("wer", fp, worse, REFERENCES) == (low, high)  # same seed, same interval
    one_more = worse[:1] + fp[1:]  # a single extra error: not told from zero
    low, high = relative_change_interval("wer", fp, one_more, REFERENCES)
    assert low <= 0 < high


def test_interval_refuses_an_error_free_reference_system_and_an_unknown_metric():
    with pytest.raises(ValueError, match="FP total is zero"):
        relative_change_interval("wer", REFERENCES, REFERENCES, REFERENCES)
    with pytest.raises(ValueError, match="no change interval for metric 'bleu'"):
        relative_change_interval("bleu", REFERENCES, REFERENCES, REFERENCES)
    # where a finished run must not fail on it: no interval instead of the error, the interval itself otherwise
    assert relative_change_interval_or_none("wer", REFERENCES, REFERENCES, REFERENCES) is None
    assert relative_change_interval_or_none("bleu", REFERENCES, REFERENCES, REFERENCES) is None
    fp = [r if i % 4 else r.replace("press", "pass") for i, r in enumerate(REFERENCES)]
    assert relative_change_interval_or_none("wer", fp, REFERENCES, REFERENCES) == relative_change_interval(
        "wer", fp, REFERENCES, REFERENCES)


def test_accuracy_interval_brackets_the_relative_accuracy_change():
    labels = ["yes", "no"] * 50
    fp = labels[:90] + ["up"] * 10  # 90% correct
    quantized = labels[:60] + ["up"] * 40  # 60% correct: -33%
    low, high = relative_change_interval("accuracy", fp, quantized, labels)
    assert low < -1 / 3 < high < 0
