"""Importer of the Asterisk English sounds (esc.data.asterisk)."""

import numpy as np
import pytest

from esc.data.asterisk import DEFAULT_ROOT, find_clips, import_asterisk, word_for
from esc.data.audio import load_audio
from esc.data.folders import read_metadata


@pytest.mark.parametrize("category, stem, word", [
    ("digits", "0", "zero"), ("digits", "17", "seventeen"), ("digits", "90", "ninety"), ("digits", "oh", "oh"),
    ("digits", "h-1", None), ("digits", "mon-3", None), ("letters", "q", "q"), ("letters", "zed", "zed"),
    ("letters", "ascii42", None), ("phonetic", "a_p", "alpha"), ("phonetic", "x_p", "xray"),
    ("phonetic", "9_p", "niner"), ("dictate", "a", None),
])
def test_word_from_file_name(category, stem, word):
    assert word_for(category, stem) == word


def test_missing_package_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install asterisk-core-sounds-en-wav"):
        find_clips(tmp_path)


@pytest.mark.skipif(not (DEFAULT_ROOT / "digits").is_dir(),
                    reason="asterisk-core-sounds-en-wav is not installed (apt-get install asterisk-core-sounds-en-wav)")
def test_import_writes_words_and_keywords(tmp_path):
    paths = import_asterisk(tmp_path)
    words = read_metadata(paths["words"])
    by_category = {c: {r["transcription"] for r in words if r["category"] == c}
                   for c in ("digits", "letters", "phonetic")}
    assert {"zero", "nine", "twenty", "ninety", "hundred"} <= by_category["digits"]
    assert len(by_category["letters"]) == 27 and len(by_category["phonetic"]) == 27  # a-z + zed, alpha-zulu + niner
    assert {p.name for p in paths["words"].glob("*.flac")} == {r["file_name"] for r in words}
    audio = load_audio(paths["words"] / "digits_seven.flac", 16000, expected_rate=16000)
    assert 0.3 < audio.size / 16000 < 2.0  # resampled from 8 kHz: same duration, twice the samples

    keywords = read_metadata(paths["keywords"])
    assert sorted(r["label"] for r in keywords) == sorted(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    for row in keywords:
        clip = load_audio(paths["keywords"] / row["file_name"], 16000, expected_rate=16000)
        assert clip.shape == (16000,) and np.max(np.abs(clip)) > 0.05
