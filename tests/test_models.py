"""Model adapters on tiny models built from the configs in conf/model."""

import numpy as np
import pytest
import torch

from esc.metrics import error_rates, normalize_text
from esc.models.base import CheckpointError
from esc.models.registry import build_adapter, trained_classifier
from run_helpers import seeded_model

TINY = ["ast_tiny", "wav2vec2_kws_tiny", "wav2vec2_ctc_tiny", "whisper_tiny"]


def waves(n=3, seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * 16000 * (1 - 0.1 * i)))).astype(np.float32) for i in range(n)]


def targets_for(adapter, n=3):
    if adapter.task == "classification":
        return [adapter.labels[i % len(adapter.labels)] for i in range(n)]
    return ["hello world", "yes", "the cat sat"][:n]


@pytest.mark.parametrize("name", TINY)
def test_adapter_forward_loss_predict_score(name):
    adapter = seeded_model(name)
    targets = targets_for(adapter)
    batch = adapter.collate(waves(), targets)
    logits = adapter.forward(batch)
    assert logits.shape[0] == 3 and torch.isfinite(logits).all()
    loss = adapter.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.model.parameters())
    predictions = adapter.predict(batch)
    assert len(predictions) == 3 and all(isinstance(p, str) for p in predictions)
    scores = adapter.score(predictions, targets)
    assert set(scores) == ({"accuracy"} if adapter.task == "classification" else {"wer", "cer"})


def test_whisper_greedy_with_cache_equals_greedy_without_cache():
    adapter = seeded_model("whisper_tiny")
    batch = adapter.collate(waves(2))
    predicted = adapter.predict(batch)
    # Reference: re-run the whole prefix at every step, no cache, same suppression.
    ids = torch.tensor([adapter.prompt] * 2)
    with torch.no_grad():
        for step in range(adapter.max_new_tokens):
            logits = adapter.model(input_features=batch["input_features"], decoder_input_ids=ids).logits[:, -1]
            logits[:, adapter.suppress + (adapter.begin_suppress if step == 0 else [])] = float("-inf")
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    expected = []
    for row in ids[:, len(adapter.prompt):].tolist():
        row = row[: row.index(adapter.eos)] if adapter.eos in row else row
        expected.append(adapter.tokenizer.decode(row, skip_special_tokens=True).strip())
    assert predicted == expected


def test_whisper_labels_align_with_teacher_forcing():
    adapter = seeded_model("whisper_tiny")
    batch = adapter.collate(waves(2), ["hello world", "a much longer sentence here"])
    ids, labels = batch["decoder_input_ids"], batch["labels"]
    for row in range(2):
        known = labels[row] != -100
        positions = known.nonzero().squeeze(1)
        # The label at position t is the input at t+1 (next token), and the last label is end-of-text.
        assert torch.equal(labels[row, positions[:-1]], ids[row, positions[:-1] + 1])
        assert labels[row, positions[-1]] == adapter.eos


def test_unknown_label_is_named():
    adapter = seeded_model("ast_tiny")
    with pytest.raises(ValueError, match="'maybe'"):
        adapter.collate(waves(1), ["maybe"])


def test_missing_local_checkpoint_says_what_to_provide(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = {"name": "x", "family": "ast", "task": "classification", "source": "pretrained", "path": str(tmp_path)}
    with pytest.raises(CheckpointError, match="local checkpoint directory"):
        build_adapter(cfg)


def test_unknown_family_lists_valid_ones():
    with pytest.raises(ValueError, match="whisper"):
        build_adapter({"family": "hubert", "task": "ctc"})


def test_pretrained_round_trip(tmp_path):
    adapter = seeded_model("ast_tiny")
    adapter.model.save_pretrained(tmp_path)
    adapter.processor.save_pretrained(tmp_path)
    loaded = build_adapter({"family": "ast", "task": "classification", "source": "pretrained", "path": str(tmp_path)})
    batch = adapter.collate(waves(2))
    assert torch.equal(adapter.forward(batch), loaded.forward(batch))


def test_trained_classifier_reads_its_family_and_refuses_other_folders(tmp_path):
    adapter = seeded_model("wav2vec2_kws_tiny")
    adapter.model.save_pretrained(tmp_path / "w2v")
    adapter.processor.save_pretrained(tmp_path / "w2v")
    assert trained_classifier(tmp_path / "w2v").family == "wav2vec2"
    with pytest.raises(CheckpointError, match="no config.json"):
        trained_classifier(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "whisper"}')
    with pytest.raises(CheckpointError, match="'whisper' is not a keyword classifier"):
        trained_classifier(tmp_path)


def test_normaliser_treats_reference_and_hypothesis_alike():
    assert normalize_text("It's 7 o'clock, Mr. Smith-Jones!") == "it's seven o'clock mr smith jones"
    assert normalize_text("1,250 people") == "one thousand two hundred fifty people"
    assert normalize_text("$2 million, 3.5 percent") == "two million dollars three point five percent"
    assert error_rates(["Seven cats."], ["7 cats"])["wer"] == 0.0
    assert error_rates(["seven dogs"], ["7 cats"])["wer"] == 0.5


@pytest.mark.parametrize("name", TINY)
def test_predict_and_forward_equals_separate_calls(name):
    adapter = seeded_model(name)
    batch = adapter.collate(waves(2), targets_for(adapter, 2))
    predictions, logits = adapter.predict_and_forward(batch)
    assert predictions == adapter.predict(batch)
    assert torch.allclose(logits, adapter.forward(batch).detach(), atol=1e-6)
