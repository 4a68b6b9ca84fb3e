"""Packing calibration clips into the model's fixed input window (esc.data.packing)."""

import numpy as np

from esc.data.datamodule import Example
from esc.data.packing import pack_examples


def clip(name, seconds, target="x", rate=100):
    audio = np.full(int(seconds * rate), 0.5, dtype=np.float32)
    return Example(name, audio, target, name)


def test_clips_are_packed_in_order_within_the_window():
    examples = [clip("a", 1.0, "one"), clip("b", 1.0, "two"), clip("c", 1.5, "three"), clip("d", 4.0, "four")]
    packed = pack_examples(examples, window_samples=300, sampling_rate=100, gap_seconds=0.5)
    # a + gap + b = 250 samples fits; c (150) would make 450; d (400) is longer than the window and stays alone.
    assert [p.name for p in packed] == ["a+b", "c", "d"]
    assert [p.target for p in packed] == ["one two", "three", "four"]
    assert len(packed[0].audio) == 250 and np.all(packed[0].audio[100:150] == 0.0)
    assert all(len(p.audio) <= 300 for p in packed[:2])


def test_a_missing_target_makes_the_window_unlabelled():
    packed = pack_examples([clip("a", 1.0, "one"), clip("b", 1.0, None)], window_samples=1000, sampling_rate=100)
    assert len(packed) == 1 and packed[0].target is None


def test_only_models_with_a_fixed_window_pack():
    from omegaconf import OmegaConf

    from esc.models.registry import build_adapter
    from tests.run_helpers import compose_run

    def adapter(name):
        return build_adapter(OmegaConf.to_container(compose_run(f"model={name}").model, resolve=True))

    assert adapter("whisper_tiny").input_window_samples == 16000  # the tiny config's 1 s encoder window
    assert adapter("ast_tiny").input_window_samples is None
    assert compose_run().dataset.pack_calibration is True


def test_calibration_loader_packs_short_clips_into_the_window(tmp_path):
    import soundfile as sf
    from omegaconf import OmegaConf

    from esc.data.datamodule import AudioDataModule
    from esc.models.registry import build_adapter
    from tests.run_helpers import compose_run

    rng = np.random.default_rng(0)
    for split, n in (("calibration", 4), ("evaluation", 1)):
        (tmp_path / split).mkdir()
        rows = ["file_name,transcription"]
        for i in range(n):
            sf.write(tmp_path / split / f"{i}.wav", (0.3 * rng.standard_normal(3200)).astype(np.float32), 16000)
            rows.append(f"{i}.wav,word {i}")
        (tmp_path / split / "metadata.csv").write_text("\n".join(rows) + "\n")
    counts = {}
    for pack in (True, False):
        cfg = compose_run("model=whisper_tiny", "dataset=folder", f"dataset.path={tmp_path}",
                          f"dataset.pack_calibration={pack}", "dataset.batch_size=8")
        adapter = build_adapter(OmegaConf.to_container(cfg.model, resolve=True))
        data = AudioDataModule(OmegaConf.to_container(cfg.dataset, resolve=True), adapter)
        data.setup()
        [batch] = list(data.calibration_dataloader(pack=cfg.dataset.pack_calibration))
        counts[pack] = len(batch["names"])
    # Four 0.2 s clips: unpacked four windows; packed two per 1 s window (0.2 + 0.3 gap + 0.2 + 0.3 + 0.2 = 1.2 s > 1 s).
    assert counts == {False: 4, True: 2}
