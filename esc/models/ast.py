"""AST (Audio Spectrogram Transformer) for audio classification."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

from esc.models.base import load_pretrained
from esc.models.classification import ClassificationAdapter


class ASTAdapter(ClassificationAdapter):
    family = "ast"

    def features(self, audios):
        out = self.processor(list(audios), sampling_rate=self.sampling_rate, return_tensors="pt")
        return {"input_values": out["input_values"]}

    @property
    def log_mel_units_per_db(self) -> float:
        # Kaldi fbanks are natural-log power; the extractor's normalisation divides them by twice its `std`.
        per_db = math.log(10) / 10
        return per_db / (2 * self.processor.std) if self.processor.do_normalize else per_db

    @classmethod
    def from_pretrained(cls, source: str, attn_implementation: str = "eager") -> "ASTAdapter":
        """Load a checkpoint (hub id or local directory) and its feature extractor."""
        model = load_pretrained(ASTForAudioClassification, source, "AST model", attn_implementation=attn_implementation)
        return cls(model, load_pretrained(ASTFeatureExtractor, source, "AST feature extractor"))

    @classmethod
    def from_config(cls, config: Mapping, labels: Sequence[str], attn_implementation: str = "eager") -> "ASTAdapter":
        """A randomly initialised model from config fields (tests, training from scratch)."""
        cfg = ASTConfig(**dict(config), num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={lab: i for i, lab in enumerate(labels)}, attn_implementation=attn_implementation)
        extractor = ASTFeatureExtractor(num_mel_bins=cfg.num_mel_bins, max_length=cfg.max_length)
        return cls(ASTForAudioClassification(cfg), extractor)
