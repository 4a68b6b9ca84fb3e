"""Run data: bad files skipped and counted or stopping the run, disjoint splits, deterministic calibration draws."""

import shutil

import pytest
import soundfile as sf
from omegaconf import OmegaConf

from audio_folders import tone, write_folder, write_split
from esc.data.audio import BadAudioError
from esc.data.datamodule import AudioDataModule, SplitOverlapError
from esc.experiment import calibration_targets, run_experiment
from esc.models.registry import build_adapter
from run_helpers import compose_run


@pytest.fixture(scope="module")
def adapters():
    return {name: build_adapter(OmegaConf.to_container(compose_run(f"model={name}").model, resolve=True))
            for name in ("ast_tiny", "whisper_tiny")}


def with_bad_files(root):
    """A labelled folder whose evaluation split holds one good clip and one bad file of every kind."""
    write_folder(root, n_calibration=3, n_evaluation=0)
    split = write_split(root / "evaluation", [("good.wav", "yes"), ("corrupt.wav", "no"), ("empty.wav", "up"),
                                              ("rate8k.wav", "down"), ("stereo.wav", "yes"), ("untagged.wav", None),
                                              ("missing.wav", "no")], "label", first_seed=50)
    (split / "corrupt.wav").write_bytes(b"RIFF not really a wave file")
    (split / "empty.wav").write_bytes(b"")
    sf.write(split / "rate8k.wav", tone(60, rate=8000), 8000)
    sf.write(split / "stereo.wav", tone(61, channels=2), 16000)
    (split / "missing.wav").unlink()
    sf.write(split / "unlisted.wav", tone(62), 16000)
    return root


def datamodule(adapter, root, *overrides):
    cfg = compose_run("dataset=folder", f"dataset.path={root}", *overrides)
    return AudioDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), adapter)


def test_bad_files_are_skipped_by_name(tmp_path, adapters):
    data = datamodule(adapters["ast_tiny"], with_bad_files(tmp_path), "dataset.expected_rate=16000",
                      "dataset.stereo=error")
    data.setup()
    assert [e.name.rsplit("/", 1)[-1] for e in data.evaluation] == ["good.wav"]
    reasons = {b.name.rsplit("/", 1)[-1]: b.reason for b in data.bad_files}
    assert set(reasons) == {"corrupt.wav", "empty.wav", "rate8k.wav", "stereo.wav", "untagged.wav", "missing.wav",
                            "unlisted.wav"}
    assert "8000 Hz" in reasons["rate8k.wav"] and "channels" in reasons["stereo.wav"]
    assert "metadata.csv" in reasons["untagged.wav"] and "no row" in reasons["unlisted.wav"]


def test_lenient_options_accept_rate_and_channels(tmp_path, adapters):
    data = datamodule(adapters["ast_tiny"], with_bad_files(tmp_path))  # expected_rate null, stereo mix
    data.setup()
    assert sorted(e.name.rsplit("/", 1)[-1] for e in data.evaluation) == ["good.wav", "rate8k.wav", "stereo.wav"]


def test_bad_file_stops_the_run_when_configured(tmp_path, adapters):
    data = datamodule(adapters["ast_tiny"], with_bad_files(tmp_path), "dataset.on_bad_file=error")
    with pytest.raises(BadAudioError, match="corrupt.wav"):
        data.setup()


def test_run_counts_and_lists_skipped_files(tmp_path):
    cfg = compose_run("model=ast_tiny", "dataset=folder", f"dataset.path={with_bad_files(tmp_path / 'd')}",
                      "calibrator=minmax", "logger=csv", f"out_dir={tmp_path / 'out'}")
    results = run_experiment(cfg, tmp_path / "run")
    assert (results["n_eval"], results["n_bad_files"]) == (3, 5)
    assert sorted(b["name"].rsplit("/", 1)[-1] for b in results["bad_files"]) == [
        "corrupt.wav", "empty.wav", "missing.wav", "unlisted.wav", "untagged.wav"]


def test_overlapping_splits_fail_before_any_work(tmp_path):
    root = write_folder(tmp_path / "d")
    shutil.copy(root / "calibration" / "cal1.wav", root / "evaluation" / "eva0.wav")  # same audio, another name
    cfg = compose_run("model=ast_tiny", "dataset=folder", f"dataset.path={root}", "logger=csv",
                      f"out_dir={tmp_path / 'out'}")
    with pytest.raises(SplitOverlapError, match="cal1.wav = .*eva0.wav"):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "out").exists()


def test_calibration_draw_is_deterministic_per_seed(tmp_path, adapters):
    root = write_folder(tmp_path, n_calibration=8)
    draws = []
    for seed in (0, 0, 1):
        data = datamodule(adapters["ast_tiny"], root, "dataset.calibration_size=3", f"seed={seed}")
        data.setup()
        draws.append([e.name for e in data.calibration])
    assert draws[0] == draws[1] != draws[2] and len(draws[0]) == 3


def test_eval_limit_and_max_seconds(tmp_path, adapters):
    data = datamodule(adapters["ast_tiny"], write_folder(tmp_path), "dataset.eval_limit=2", "dataset.max_seconds=0.25")
    data.setup()
    assert len(data.evaluation) == 2 and all(e.audio.size == 4000 for e in data.evaluation + data.calibration)


def test_unlabelled_calibration_uses_fp_predictions(tmp_path, adapters):
    root = write_folder(tmp_path, task="recognition", n_calibration=2, n_evaluation=2)
    (root / "calibration" / "metadata.csv").write_text("file_name\ncal0.wav\ncal1.wav\n")
    adapter = adapters["whisper_tiny"]
    data = datamodule(adapter, root)
    data.setup()
    assert [e.target for e in data.calibration] == [None, None]
    targets = calibration_targets(adapter, data)
    expected = adapter.predict(adapter.collate([e.audio for e in data.calibration]))
    assert targets == expected
    assert "decoder_input_ids" in next(iter(data.calibration_dataloader(targets)))["inputs"]


def test_evaluation_needs_targets(tmp_path, adapters):
    root = write_folder(tmp_path)
    (root / "evaluation" / "metadata.csv").write_text("file_name\neva0.wav\n")
    with pytest.raises(ValueError, match="no 'label' column"):
        datamodule(adapters["ast_tiny"], root).setup()


@pytest.mark.parametrize("override, message", [("dataset.on_bad_file=ignore", "on_bad_file must be one of"),
                                               ("dataset.stereo=left", "stereo must be one of"),
                                               ("dataset.source=ftp", "dataset.source must be one of")])
def test_invalid_dataset_options_name_the_valid_ones(tmp_path, adapters, override, message):
    with pytest.raises(ValueError, match=message):
        datamodule(adapters["ast_tiny"], write_folder(tmp_path), override).setup()


def test_calibration_split_may_be_another_folder(tmp_path, adapters):
    own = write_folder(tmp_path / "own", n_calibration=2)
    other = write_split(tmp_path / "other", [(f"x{i}.wav", "yes") for i in range(5)], "label", 200)
    data = datamodule(adapters["ast_tiny"], own, f"dataset.calibration_split={other}",
                      "dataset.calibration_size=null")
    data.setup()
    assert sorted(e.name for e in data.calibration) == sorted(str(p) for p in other.glob("*.wav"))
    assert len(data.evaluation) == 4 and all(e.name.startswith(str(own)) for e in data.evaluation)
