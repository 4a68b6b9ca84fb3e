"""experiments/keyword_ensemble.py: members' and ensembles' accuracy, label columns matched by name, shared misses."""

import pytest
import torch
from audio_folders import LABELS, tone
from run_helpers import load_experiment, seeded_model
from torch import nn

from esc.data.audio import write_flac
from esc.data.folders import write_metadata
from esc.models.registry import trained_classifier
from esc.train import score_folder

ensemble = load_experiment("keyword_ensemble")


def _split(tmp_path):
    rows = [{"file_name": f"{i}.flac", "label": LABELS[i % len(LABELS)], "voice": "ab"[i % 2]} for i in range(12)]
    for i, row in enumerate(rows):
        write_flac(tmp_path / "split" / row["file_name"], tone(i), 16000)
    write_metadata(tmp_path / "split", rows)
    return tmp_path / "split"


def _save(adapter, path):
    adapter.model.save_pretrained(path)
    adapter.processor.save_pretrained(path)
    return path


def _reordered(adapter, order):
    """The same classifier with its label columns stored in `order` (head rows and id2label permuted alike)."""
    head = [m for m in adapter.model.modules() if isinstance(m, nn.Linear) and m.out_features == len(order)][-1]
    with torch.no_grad():
        head.weight.copy_(head.weight[order])
        head.bias.copy_(head.bias[order])
    labels = [adapter.labels[i] for i in order]
    adapter.model.config.id2label = dict(enumerate(labels))
    adapter.model.config.label2id = {label: i for i, label in enumerate(labels)}
    return adapter


@pytest.fixture
def checkpoints(tmp_path):
    return {"ast": _save(seeded_model("ast_tiny"), tmp_path / "ast"),
            "ast_reordered": _save(_reordered(seeded_model("ast_tiny"), [2, 0, 3, 1]), tmp_path / "reordered"),
            "w2v": _save(seeded_model("wav2vec2_kws_tiny"), tmp_path / "w2v")}


def test_label_columns_are_matched_by_name(tmp_path, checkpoints):
    split = _split(tmp_path)
    plain, reordered = (trained_classifier(checkpoints[key]) for key in ("ast", "ast_reordered"))
    assert reordered.labels != plain.labels
    _, _, expected = ensemble.log_posteriors(plain, split, plain.labels)
    _, _, aligned = ensemble.log_posteriors(reordered, split, plain.labels)
    torch.testing.assert_close(aligned, expected)
    # Ensembling a model with its reordered twin changes nothing.
    result = ensemble.compare(split, [checkpoints["ast"], checkpoints["ast_reordered"]])
    member = result["members"][str(checkpoints["ast"])]
    assert result["ensembles"][0]["accuracy"] == member["accuracy"]
    assert result["ensembles"][0]["misses"] == member["misses"]


def test_members_score_as_training_does_and_shared_misses_are_common_to_all(tmp_path, checkpoints):
    split = _split(tmp_path)
    paths = [checkpoints["ast"], checkpoints["w2v"]]
    result = ensemble.compare(split, paths, subsets=True)
    for path in paths:
        expected = score_folder(trained_classifier(path), split, batch_size=5)
        assert result["members"][str(path)]["accuracy"] == pytest.approx(expected["accuracy"])
        assert result["members"][str(path)]["by_voice"] == pytest.approx(expected["by_voice"])
    misses = [set(result["members"][str(path)]["misses"]) for path in paths]
    shared = result["missed_by_all"]
    assert shared["clips"] == sorted(misses[0] & misses[1])
    assert sum(shared["by_voice"].values()) == shared["n"] == len(shared["clips"])
    assert [e["members"] for e in result["ensembles"]] == [[str(p) for p in paths]]
    assert result["n"] == 12


def test_checkpoints_with_other_labels_are_refused(tmp_path, checkpoints):
    other = _save(seeded_model("ast_tiny", labels=["yes", "no", "left", "right"]), tmp_path / "other")
    with pytest.raises(ValueError, match="other.*differ"):
        ensemble.compare(_split(tmp_path), [checkpoints["ast"], other])
