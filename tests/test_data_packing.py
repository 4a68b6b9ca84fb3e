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
