"""Importer of the Asterisk English sounds (esc.data.asterisk)."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from esc.data.asterisk import (DEFAULT_ROOT, DEFAULT_TRANSCRIPTS, find_clips, find_prompts, import_asterisk, main,
                               split_prompts, spoken_text, word_for)
from esc.data.audio import load_audio, write_flac
from esc.data.folders import read_metadata
from esc.metrics import normalize_text


@pytest.mark.parametrize("category, stem, word", [
    ("digits", "0", "zero"), ("digits", "17", "seventeen"), ("digits", "90", "ninety"), ("digits", "oh", "oh"),
    ("digits", "h-1", None), ("digits", "mon-3", None), ("letters", "q", "q"), ("letters", "zed", "zed"),
    ("letters", "ascii42", None), ("phonetic", "a_p", "alpha"), ("phonetic", "x_p", "xray"),
    ("phonetic", "9_p", "niner"), ("dictate", "a", None),
])
def test_word_from_file_name(category, stem, word):
    assert word_for(category, stem) == word


@pytest.mark.parametrize("listed, text", [
    (" Please hold.\n", "Please hold."),
    ("Press # when done (simple tone sound plays)", "Press pound when done"),
    ("press * to toggle pause", "press star to toggle pause"),
    (" [ascending tones]", None), (" <beep ascending>", None), (" (10 seconds of silence)", None),
])
def test_spoken_text_of_a_listed_prompt(listed, text):
    assert spoken_text(listed) == text


def test_prompts_are_the_transcribed_clips_of_at_most_30_seconds(tmp_path):
    root = tmp_path / "en"
    (root / "digits").mkdir(parents=True)
    (root / "followme").mkdir()
    rate = 8000
    for name, seconds in (("hello", 1.0), ("digits/1", 0.5), ("followme/sorry", 2.0), ("long-menu", 31.0),
                          ("beep", 0.2)):
        write_flac(root / f"{name}.wav", 0.1 * np.sin(np.arange(int(seconds * rate), dtype=np.float32)), rate)
    transcripts = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(transcripts, "wt") as f:
        f.write("; Core Asterisk Sounds in English\n\nhello: Hello.\ndigits/1: one\nfollowme/sorry: I'm sorry\n"
                "long-menu: For sales, press one.\nbeep: [a beep]\nmissing: Not recorded.\n")
    prompts = find_prompts(root, transcripts)
    assert [(name, text) for _, name, text in prompts] == [("followme/sorry", "I'm sorry"), ("hello", "Hello.")]
    with pytest.raises(FileNotFoundError, match="asterisk-core-sounds-en"):
        find_prompts(root, tmp_path / "absent.txt.gz")


def test_prompt_split_shares_no_sentence_and_follows_the_seed():
    texts = ["Please hold.", "please hold", "Goodbye!", "Thank you.", "Thank you", "Press one.", "Press two.",
             "Your call is important.", "Invalid.", "Try again."]
    prompts = [(Path(f"p{i}.wav"), f"p{i}", text) for i, text in enumerate(texts)]
    splits = {seed: split_prompts(prompts, 4, seed) for seed in range(6)}
    for calibration, evaluation in splits.values():
        assert len(calibration) >= 4 and len(calibration) + len(evaluation) == len(prompts)
        assert not {normalize_text(t) for *_, t in calibration} & {normalize_text(t) for *_, t in evaluation}
        assert [p for p in prompts if p in calibration or p in evaluation] == prompts  # input order kept
    assert split_prompts(prompts, 4, 3) == splits[3]
    assert len({tuple(c) for c, _ in splits.values()}) > 1  # the seed decides which
    for bad in (0, len(prompts)):
        with pytest.raises(ValueError, match="calibration prompts must be between 1 and 9"):
            split_prompts(prompts, bad, 0)


def test_missing_package_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install asterisk-core-sounds-en-wav"):
        find_clips(tmp_path)


@pytest.mark.skipif(not (DEFAULT_ROOT / "digits").is_dir(),
                    reason="asterisk-core-sounds-en-wav is not installed (apt-get install asterisk-core-sounds-en-wav)")
def test_import_writes_words_keywords_and_prompts(tmp_path):
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

    if not DEFAULT_TRANSCRIPTS.is_file():
        assert "prompts" not in paths  # the list is under /usr/share/doc, which slim images may drop
        return
    prompts = {r["source"]: r for r in read_metadata(paths["prompts"])}
    assert len(prompts) > 300 and not any(source.startswith(("digits/", "letters/")) for source in prompts)
    assert prompts["vm-intro.wav"]["transcription"] == (
        "Please leave your message after the tone. When done hang up or press the pound key.")
    audio = load_audio(paths["prompts"] / prompts["vm-intro.wav"]["file_name"], 16000, expected_rate=16000)
    assert 3.0 < audio.size / 16000 < 30.0


@pytest.mark.skipif(not DEFAULT_TRANSCRIPTS.is_file(),
                    reason="asterisk-core-sounds-en-wav and its transcript list are not installed")
def test_import_moves_drawn_prompts_to_a_calibration_split(tmp_path):
    main(["--out", str(tmp_path), "--calibration-prompts", "20", "--seed", "1"])  # the flags reach the import
    calibration = read_metadata(tmp_path / "prompts" / "calibration")
    evaluation = read_metadata(tmp_path / "prompts" / "evaluation")
    assert len(calibration) >= 20 and len(calibration) + len(evaluation) == len(find_prompts())
    assert not ({normalize_text(r["transcription"]) for r in calibration}
                & {normalize_text(r["transcription"]) for r in evaluation})
    other = import_asterisk(tmp_path / "other", calibration_prompts=20, seed=2)
    assert read_metadata(other["prompts_calibration"]) != calibration  # the seed decides which
