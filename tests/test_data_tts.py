"""Synthetic speech sets (esc.data.tts, synth, engines) on a handful of clips."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from esc.data import engines
from esc.data.audio import load_audio
from esc.data.effects import trim_silence
from esc.data.engines import EngineMissingError, Voice, check_voice, engine_args, require_engine, synthesize
from esc.data.folders import METADATA, read_metadata
from esc.data.pico import pico_installed
from esc.data.synth import Clip, Variation, balanced_voices, plan, speak
from esc.data.tts import (
    KEYWORD_HELDOUT_VOICES,
    KEYWORD_VARIATIONS,
    SENTENCE_HELDOUT_VOICES,
    generate_keywords,
    generate_sentences,
    main,
)

HAVE_ENGINES = bool(shutil.which("espeak-ng") and shutil.which("flite"))
NO_ENGINES = "espeak-ng and flite are not installed (apt-get install espeak-ng flite)"
needs_engines = pytest.mark.skipif(not HAVE_ENGINES, reason=NO_ENGINES)
needs_pico = pytest.mark.skipif(not pico_installed(), reason="ttspico is not installed (pip install ttspico)")
SENTENCES = dict(n_sentences=12, calibration_fraction=0.25, progress=False)  # 3 calibration, 9 evaluation
KEYWORDS = dict(words=("yes", "zero"), per_word_calibration=3, per_word_evaluation=2, progress=False)


def folder_bytes(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sentences(tmp_path_factory):
    if not HAVE_ENGINES:
        pytest.skip(NO_ENGINES)
    out = tmp_path_factory.mktemp("sentences")
    generate_sentences(out, seed=0, **SENTENCES)
    return out


@pytest.fixture(scope="module")
def keywords(tmp_path_factory):
    if not HAVE_ENGINES:
        pytest.skip(NO_ENGINES)
    out = tmp_path_factory.mktemp("keywords")
    generate_keywords(out, seed=0, **KEYWORDS)
    return out


def check_split(split_dir, column):
    """Metadata and files agree; every clip loads as valid 16 kHz mono audio."""
    rows = read_metadata(split_dir)
    assert list(rows[0]) == ["file_name", column, "text", "voice", "engine", "speed", "pitch", "noise", "noise_db",
                            "formant"]
    assert {r["file_name"] for r in rows} == {p.name for p in split_dir.glob("*.flac")}
    clips = [load_audio(split_dir / r["file_name"], 16000, expected_rate=16000, stereo="error") for r in rows]
    return rows, clips


def test_sentence_splits(sentences):
    calibration, _ = check_split(sentences / "calibration", "transcription")
    evaluation, _ = check_split(sentences / "evaluation", "transcription")
    assert (len(calibration), len(evaluation)) == (3, 9)
    assert not {r["transcription"] for r in calibration} & {r["transcription"] for r in evaluation}
    heldout = {v.name for v in SENTENCE_HELDOUT_VOICES}
    assert heldout <= {r["voice"] for r in evaluation}
    assert not heldout & {r["voice"] for r in calibration}
    assert all(r["text"] == r["transcription"] for r in calibration + evaluation)


def test_same_seed_same_bytes_other_seed_differs(sentences, tmp_path):
    generate_sentences(tmp_path / "again", seed=0, **{**SENTENCES, "progress": True})
    assert folder_bytes(tmp_path / "again") == folder_bytes(sentences)
    generate_sentences(tmp_path / "other", seed=1, **SENTENCES)
    assert read_metadata(tmp_path / "other" / "evaluation") != read_metadata(sentences / "evaluation")
    assert (tmp_path / "other/evaluation/00000.flac").read_bytes() != (sentences / "evaluation/00000.flac").read_bytes()


def test_keyword_splits(keywords):
    calibration, cal_clips = check_split(keywords / "calibration", "label")
    evaluation, eval_clips = check_split(keywords / "evaluation", "label")
    assert [r["label"] for r in calibration] == ["yes"] * 3 + ["zero"] * 3
    assert [r["label"] for r in evaluation] == ["yes"] * 2 + ["zero"] * 2
    assert all(clip.shape == (16000,) for clip in cal_clips + eval_clips)
    assert {r["voice"] for r in evaluation} <= {v.name for v in KEYWORD_HELDOUT_VOICES}
    assert not {r["voice"] for r in calibration} & {r["voice"] for r in evaluation}
    # Formants move in training only; held-out voices stay natural.
    assert len({r["formant"] for r in calibration}) == len(calibration)
    assert {r["formant"] for r in evaluation} == {"1.0"}
    low, high = KEYWORD_VARIATIONS["calibration"].formant
    assert all(low <= float(r["formant"]) <= high for r in calibration)
    for row in calibration + evaluation:
        assert row["noise"] in ("none", "white", "pink")
        assert (row["noise_db"] == "") == (row["noise"] == "none")


def test_noise_covers_the_padding(keywords):
    rows = [(split, r) for split in ("calibration", "evaluation") for r in read_metadata(keywords / split)]
    zeros = {"none": [], "noisy": []}
    for split, row in rows:
        clip = load_audio(keywords / split / row["file_name"], 16000)
        zeros["none" if row["noise"] == "none" else "noisy"].append(np.mean(clip == 0))
    assert zeros["none"] and zeros["noisy"], "about half the keyword clips should be noisy"
    # Clean clips are padded with digital silence; in noisy ones the noise runs through the padding too.
    assert min(zeros["none"]) > 0.05 and max(zeros["noisy"]) < 0.02


@pytest.mark.parametrize("kind, column", [("sentences", "transcription"), ("keywords", "label")])
def test_datasets_audiofolder_loads_offline(request, tmp_path, kind, column):
    split_dir = request.getfixturevalue(kind) / "evaluation"
    # A fresh process: datasets reads HF_DATASETS_OFFLINE when it is imported.
    code = (
        "import json, sys; from datasets import load_dataset\n"
        "ds = load_dataset('audiofolder', data_dir=sys.argv[1], split='train')\n"
        "a = ds[0]['audio']\n"
        "print(json.dumps({'n': len(ds), 'columns': ds.column_names, 'rate': a['sampling_rate'],"
        " 'samples': len(a['array']), 'first': ds[0][sys.argv[2]]}))\n"
    )
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-c", code, str(split_dir), column], env=env, capture_output=True,
                          text=True, timeout=600)  # generous: a loaded 2-core machine imports slowly
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = read_metadata(split_dir)
    assert result["n"] == len(rows) and result["rate"] == 16000 and result["samples"] > 0
    assert column in result["columns"] and result["first"] == rows[0][column]


@needs_engines
def test_cli_writes_a_set_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    main(["keywords", "--out", str(out), "--per-word-calibration", "1", "--per-word-evaluation", "1"])
    assert len(read_metadata(out / "calibration")) == len(read_metadata(out / "evaluation")) == 35
    with pytest.raises(SystemExit) as info:
        main(["keywords", "--out", str(out)])
    assert info.value.code == 1 and "not empty" in capsys.readouterr().err
    assert (out / "calibration" / METADATA).is_file()


@needs_engines
def test_cli_takes_voices_and_names_an_unknown_one(tmp_path, capsys):
    out = tmp_path / "voices"
    main(["keywords", "--out", str(out), "--per-word-calibration", "1", "--per-word-evaluation", "1",
          "--voices", "espeak-ng:en-us+f5", "flite:awb", "--heldout-voices", "espeak-ng:en-us+Annie"])
    assert {r["voice"] for r in read_metadata(out / "calibration")} == {"en-us+f5", "awb"}
    assert {r["voice"] for r in read_metadata(out / "evaluation")} == {"en-us+Annie"}
    with pytest.raises(SystemExit) as info:
        main(["keywords", "--out", str(tmp_path / "bad"), "--voices", "espeak-ng:en-us+nosuch"])
    assert info.value.code == 1 and "espeak-ng:en-us+nosuch: +nosuch unknown to espeak-ng" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "calibration" / METADATA).exists()


@needs_engines
def test_unknown_voice_is_refused():
    check_voice(Voice("espeak-ng", "en-us+m3"))
    for voice in (Voice("flite", "nosuch"), Voice("espeak-ng", "en-us+zz9"), Voice("espeak-ng", "xx-yy")):
        with pytest.raises(ValueError, match="unknown to"):
            check_voice(voice)
    with pytest.raises(ValueError, match="held-out"):
        generate_sentences("unused", voices=SENTENCE_HELDOUT_VOICES, progress=False)


def test_missing_engine_says_how_to_install(monkeypatch):
    monkeypatch.setattr(engines.shutil, "which", lambda name: None)
    with pytest.raises(EngineMissingError, match="apt-get install espeak-ng flite"):
        require_engine("flite")


def test_missing_pico_says_how_to_install(monkeypatch):
    monkeypatch.setattr(engines, "pico_installed", lambda: False)
    with pytest.raises(EngineMissingError, match="pip install ttspico"):
        synthesize(Voice("pico", "en-US"), "yes")


@needs_pico
def test_pico_is_deterministic_and_refuses_what_it_cannot_do():
    voice = Voice("pico", "en-GB")
    check_voice(voice)
    first, second = (synthesize(voice, "backward", speed=0.9, pitch=1.3) for _ in range(2))
    assert first.dtype == np.float32 and first.size > 8000 and np.array_equal(first, second)
    assert not np.array_equal(first, synthesize(voice, "backward", speed=0.9, pitch=1.0))
    with pytest.raises(ValueError, match="pico:en-GB: pitch 2.5 is outside Pico's 0.5-2"):
        synthesize(voice, "yes", pitch=2.5)
    with pytest.raises(ValueError, match="unknown to pico"):
        check_voice(Voice("pico", "en-AU"))


def test_voice_parsing():
    assert Voice.parse("espeak-ng:en-gb+f3") == Voice("espeak-ng", "en-gb+f3")
    assert str(Voice("flite", "slt")) == "flite:slt"
    for bad in ("slt", "festival:kal", "flite:"):
        with pytest.raises(ValueError):
            Voice.parse(bad)


def test_balanced_voices_spread_the_remainder():
    voices = [Voice("flite", name) for name in ("kal", "awb", "rms")]
    rng = np.random.default_rng(0)
    counts = Counter(v.name for _ in range(300) for v in balanced_voices(voices, 4, rng))  # 300 plans of 4 clips
    assert all(350 <= c <= 450 for c in counts.values()), counts
    one_plan = Counter(balanced_voices(voices, 7, rng))
    assert sorted(one_plan.values()) == [2, 2, 3]


def test_engine_args_map_relative_speed_and_pitch():
    assert engine_args(Voice("espeak-ng", "en-us+m3"), 1.0, 1.0) == ["-v", "en-us+m3", "-s", "140", "-p", "50"]
    assert engine_args(Voice("espeak-ng", "en-us+m3"), 0.5, 3.0)[3:] == ["70", "-p", "99"]  # -p tops out at 99
    slt = engine_args(Voice("flite", "slt"), 0.8, 1.1)
    assert "duration_stretch=1.2500" in slt and "int_f0_target_mean=187.00" in slt
    with pytest.raises(ValueError, match="FLITE_F0"):
        engine_args(Voice("flite", "awb_time"), 1.0, 1.0)


@pytest.mark.parametrize("spec", [
    pytest.param("espeak-ng:en-us+m3", marks=needs_engines), pytest.param("flite:slt", marks=needs_engines),
    pytest.param("pico:en-US", marks=needs_pico),
])
def test_speed_and_pitch_reach_the_audio(spec):
    voice, text = Voice.parse(spec), "The weather today is mild and the river is calm."
    slow, fast = (trim_silence(synthesize(voice, text, speed=s)).size for s in (0.8, 1.25))
    assert 1.3 < slow / fast < 1.9
    low, high = (synthesize(voice, text, pitch=p) for p in (0.8, 1.2))
    assert median_f0(high) / median_f0(low) > 1.15


def test_plans_without_formant_draw_nothing_for_it():
    items = [(f"{i}.flac", "yes", "yes") for i in range(5)]
    voices = [Voice("flite", "kal"), Voice("flite", "awb")]
    natural = plan(items, voices, Variation(), np.random.default_rng(3))
    assert all(c.formant == 1.0 for c in natural)
    shifted = plan(items, voices, Variation(formant=(0.9, 1.25)), np.random.default_rng(3))
    assert [c.seed for c in shifted] != [c.seed for c in natural]  # the draw itself is real
    assert all(0.9 <= c.formant <= 1.25 for c in shifted)


@needs_engines
def test_formant_shift_moves_the_spectrum_not_speed_or_pitch():
    clip = Clip(file_name="x.flac", target="", text="The weather today is mild and the river is calm.",
                voice=Voice("flite", "awb"), speed=1.0, pitch=1.0, noise="none", noise_db=None, seed=0)
    natural = speak(clip)
    raised = speak(dataclasses.replace(clip, formant=1.25))
    assert 0.9 < trim_silence(raised).size / trim_silence(natural).size < 1.1
    assert 0.9 < median_f0(raised) / median_f0(natural) < 1.1
    assert spectral_centroid(raised) / spectral_centroid(natural) > 1.12


def spectral_centroid(audio, rate=16000):
    power = np.abs(np.fft.rfft(audio)) ** 2
    return float(np.sum(np.fft.rfftfreq(audio.size, 1 / rate) * power) / np.sum(power))


def median_f0(audio, rate=16000):
    """Median f0 of voiced frames from the autocorrelation peak in 60-400 Hz (enough to order two pitches)."""
    frames = np.lib.stride_tricks.sliding_window_view(audio, 640)[::320]
    frames = frames[np.sqrt(np.mean(frames**2, axis=1)) > 0.3 * np.sqrt(np.mean(audio**2))]
    lags = np.arange(rate // 400, rate // 60)
    f0 = [rate / lags[np.argmax([np.dot(f[:-lag], f[lag:]) for lag in lags])] for f in frames]
    return float(np.median(f0))
