"""experiments/rescore.py: finished runs re-scored on a subset of their clips from predictions.json."""

import json

import pytest

from esc.metrics import error_rates
from run_helpers import load_experiment

rescore_module = load_experiment("rescore")

TEXTS = {f"c{i}.flac": f"press {w} now" for i, w in enumerate(("one", "two", "three", "four", "five", "six"))}


def write_run(run_dir, fp, quantized, metric="wer"):
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({"metric": metric, "calibrator": "mse",
                                                      "calibrator_options": {}}))
    (run_dir / "predictions.json").write_text(json.dumps({
        "fp": {f"/old/place/evaluation/{n}": t for n, t in fp.items()},
        "quantized": {f"/old/place/evaluation/{n}": t for n, t in quantized.items()}}))
    return run_dir


def write_split(split_dir, names, column="transcription"):
    split_dir.mkdir(parents=True)
    lines = [f"file_name,{column}"] + [f"{n},{TEXTS[n]}" for n in names]
    (split_dir / "metadata.csv").write_text("\n".join(lines) + "\n")
    return split_dir


def test_scores_only_the_split_clips_matched_by_file_name(tmp_path):
    fp = {n: t.replace("now", "") if n != "c5.flac" else t for n, t in TEXTS.items()}  # one error in all but c5
    quantized = dict(fp, **{"c1.flac": "press to", "c4.flac": "dress five"})
    run = write_run(tmp_path / "run", fp, quantized)
    names = ["c0.flac", "c1.flac", "c2.flac", "c3.flac"]  # c4's error is outside the split
    r = rescore_module.rescore(write_split(tmp_path / "split", names), run)
    refs = [TEXTS[n] for n in names]
    assert r["fp"] == pytest.approx(error_rates([fp[n] for n in names], refs)["wer"]) == pytest.approx(4 / 12)
    assert r["quantized"] == pytest.approx(5 / 12) and r["change"] == pytest.approx(1 / 4)
    assert r["change_low"] <= r["change"] <= r["change_high"] and r["agreement"] == 0.75
    # the first two of another split; c5 alone on some resamples leaves no FP error: no interval, the change stands
    first = rescore_module.rescore(write_split(tmp_path / "other", ["c5.flac", "c1.flac", "c2.flac"]), run, first=2)
    assert (first["clips"], first["fp"], first["quantized"]) == (2, pytest.approx(1 / 6), pytest.approx(2 / 6))
    assert first["change_low"] is None and first["change"] == pytest.approx(1.0)


def test_a_split_clip_without_prediction_is_named(tmp_path):
    run = write_run(tmp_path / "run", {"c0.flac": "x"}, {"c0.flac": "x"})
    with pytest.raises(ValueError, match=r"no prediction for 1 clip\(s\).*c1.flac"):
        rescore_module.rescore(write_split(tmp_path / "split", ["c0.flac", "c1.flac"]), run)


def test_classification_runs_are_scored_by_accuracy(tmp_path):
    labels = {n: TEXTS[n] for n in TEXTS}
    quantized = dict(labels, **{"c0.flac": "wrong", "c1.flac": "wrong"})
    run = write_run(tmp_path / "run", labels, quantized, metric="accuracy")
    r = rescore_module.rescore(write_split(tmp_path / "split", list(TEXTS), column="label"), run)
    assert (r["metric"], r["fp"], r["quantized"]) == ("accuracy", 1.0, pytest.approx(4 / 6))
    assert r["change"] == pytest.approx(-1 / 3)
