"""wav2vec2: CTC speech recognition and sequence (keyword) classification."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                          Wav2Vec2ForSequenceClassification)

from esc.metrics import normalize_text
from esc.models.base import ModelAdapter, load_pretrained
from esc.models.classification import ClassificationAdapter

CHARACTERS = list("abcdefghijklmnopqrstuvwxyz'")


def _features(extractor, audios, sampling_rate):
    out = extractor(list(audios), sampling_rate=sampling_rate, padding=True, return_attention_mask=True,
                    return_tensors="pt")
    return {"input_values": out["input_values"], "attention_mask": out["attention_mask"]}


def character_tokenizer(directory: str | Path | None = None) -> Wav2Vec2CTCTokenizer:
    """A lower-case character CTC vocabulary (letters, apostrophe, '|' between words, pad, unk)."""
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2} | {c: i + 3 for i, c in enumerate(CHARACTERS)}
    directory = Path(directory or tempfile.mkdtemp(prefix="esc-vocab-"))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    return Wav2Vec2CTCTokenizer(str(directory / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                word_delimiter_token="|", do_lower_case=False)


def _default_extractor() -> Wav2Vec2FeatureExtractor:
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=True)


class Wav2Vec2CTCAdapter(ModelAdapter):
    """CTC recognition; targets are transcripts, normalised before tokenising."""

    family = "wav2vec2"
    task = "ctc"
    metric_name = "wer"

    def __init__(self, model, processor, tokenizer, sampling_rate: int = 16000):
        super().__init__(model, processor, sampling_rate)
        self.tokenizer = tokenizer

    def collate(self, audios, targets=None):
        batch = _features(self.processor, self.frontend(audios), self.sampling_rate)
        if targets is not None:
            encoded = self.tokenizer([normalize_text(t) for t in targets], padding=True, return_tensors="pt")
            batch["labels"] = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
        return batch

    def forward(self, batch):
        batch = self._on_device(batch)
        return self.model(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits

    def loss(self, batch):
        batch = self._on_device(batch)
        return self.model(**batch).loss

    @torch.no_grad()
    def predict(self, batch):
        return self.tokenizer.batch_decode(self.forward(batch).argmax(dim=-1), skip_special_tokens=True)

    @classmethod
    def from_pretrained(cls, source: str, attn_implementation: str = "eager") -> "Wav2Vec2CTCAdapter":
        model = load_pretrained(Wav2Vec2ForCTC, source, "wav2vec2 CTC model", attn_implementation=attn_implementation)
        extractor = load_pretrained(Wav2Vec2FeatureExtractor, source, "wav2vec2 feature extractor")
        return cls(model, extractor, load_pretrained(Wav2Vec2CTCTokenizer, source, "wav2vec2 CTC tokenizer"))

    @classmethod
    def from_config(cls, config: Mapping, attn_implementation: str = "eager") -> "Wav2Vec2CTCAdapter":
        tokenizer = character_tokenizer()
        cfg = Wav2Vec2Config(**dict(config), vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                             attn_implementation=attn_implementation)
        return cls(Wav2Vec2ForCTC(cfg), _default_extractor(), tokenizer)


class Wav2Vec2ClassificationAdapter(ClassificationAdapter):
    """Sequence classification (keyword spotting) with a pooled wav2vec2 encoder."""

    family = "wav2vec2"

    def features(self, audios):
        return _features(self.processor, audios, self.sampling_rate)

    @classmethod
    def from_pretrained(cls, source: str, attn_implementation: str = "eager") -> "Wav2Vec2ClassificationAdapter":
        model = load_pretrained(Wav2Vec2ForSequenceClassification, source, "wav2vec2 classifier",
                                attn_implementation=attn_implementation)
        return cls(model, load_pretrained(Wav2Vec2FeatureExtractor, source, "wav2vec2 feature extractor"))

    @classmethod
    def from_config(cls, config: Mapping, labels: Sequence[str],
                    attn_implementation: str = "eager") -> "Wav2Vec2ClassificationAdapter":
        cfg = Wav2Vec2Config(**dict(config), num_labels=len(labels), id2label=dict(enumerate(labels)),
                             label2id={lab: i for i, lab in enumerate(labels)}, attn_implementation=attn_implementation)
        return cls(Wav2Vec2ForSequenceClassification(cfg), _default_extractor())
