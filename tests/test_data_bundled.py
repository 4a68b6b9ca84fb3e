"""The small sentence set shipped in the package (esc/assets/sentences_small)."""

import pytest

from esc.data.audio import load_audio
from esc.data.bundled import bundled_path
from esc.data.corpus import compose_sentences
from esc.data.folders import read_metadata
from esc.data.tts import SENTENCE_HELDOUT_VOICES

# The command in esc/assets/sentences_small/README.md.
SEED, N_SENTENCES, N_CALIBRATION = 0, 64, 16


@pytest.fixture(scope="module")
def splits():
    root = bundled_path("sentences_small")
    return {split: (root / split, read_metadata(root / split)) for split in ("calibration", "evaluation")}


def test_bundled_set_is_consistent_with_its_files(splits):
    for split_dir, rows in splits.values():
        assert {p.name for p in split_dir.iterdir() if p.suffix == ".flac"} == {r["file_name"] for r in rows}
        for row in rows:
            audio = load_audio(split_dir / row["file_name"], 16000, expected_rate=16000, stereo="error")
            assert 0.5 < audio.size / 16000 < 15
    assert len(splits["calibration"][1]) == N_CALIBRATION
    assert len(splits["evaluation"][1]) == N_SENTENCES - N_CALIBRATION


def test_bundled_set_matches_its_recipe(splits):
    cal, evl = (rows for _, rows in splits.values())
    assert [r["transcription"] for r in cal + evl] == compose_sentences(N_SENTENCES, SEED)
    heldout = {v.name for v in SENTENCE_HELDOUT_VOICES}
    assert heldout <= {r["voice"] for r in evl} and not heldout & {r["voice"] for r in cal}


def test_bundled_set_is_small():
    root = bundled_path("sentences_small")
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 6 * 2**20
    assert "python -m esc.data.tts sentences" in (root / "README.md").read_text()


def test_unknown_bundled_name():
    with pytest.raises(ValueError, match="sentences_small"):
        bundled_path("nope")
