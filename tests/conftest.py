"""Shared fixtures: tiny random speech models (one per family), built FP with eager attention, eval mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from transformers import (
    ASTConfig,
    ASTForAudioClassification,
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
    Wav2Vec2ForSequenceClassification,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

# One intra-op thread: tiny models gain nothing from two, and on a shared 2-core machine two threads
# per process make a millisecond forward take most of a second.
torch.set_num_threads(1)

W2V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
           conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
           vocab_size=12, attn_implementation="eager")


def _ast():
    return ASTForAudioClassification(ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                               intermediate_size=64, num_mel_bins=16, max_length=32, num_labels=3,
                                               attn_implementation="eager"))


def _whisper():
    return WhisperForConditionalGeneration(WhisperConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=50, max_target_positions=32,
        vocab_size=40, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        attn_implementation="eager"))


def _ast_batch(g, b=2):
    return {"input_values": torch.randn(b, 32, 16, generator=g)}


def _w2v_batch(g, b=2):
    return {"input_values": torch.randn(b, 1600, generator=g)}


def _w2v_padded_batch(g, b=2):
    mask = torch.ones(b, 1600, dtype=torch.long)
    mask[-1, 1200:] = 0
    return {"input_values": torch.randn(b, 1600, generator=g), "attention_mask": mask}


def _whisper_batch(g, b=2):
    ids = torch.randint(3, 40, (b, 6), generator=g)
    ids[:, 0] = 1
    return {"input_features": torch.randn(b, 8, 100, generator=g), "decoder_input_ids": ids}


@dataclass(frozen=True)
class Family:
    name: str
    _build: Callable[[], torch.nn.Module]
    _batch: Callable
    attention_classes: tuple[str, ...]  # candidates in order of preference

    def build(self, seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        return self._build().eval()

    def batch(self, seed: int = 0) -> dict:
        return self._batch(torch.Generator().manual_seed(seed))


FAMILIES = {
    # transformers 5 merged ASTSelfAttention into ASTAttention; the first class name present in the model counts
    "ast": Family("ast", _ast, _ast_batch, ("ASTSelfAttention", "ASTAttention")),
    "w2v_ctc": Family("w2v_ctc", lambda: Wav2Vec2ForCTC(Wav2Vec2Config(**W2V)), _w2v_batch, ("Wav2Vec2Attention",)),
    "w2v_cls_stable": Family(
        "w2v_cls_stable",
        lambda: Wav2Vec2ForSequenceClassification(Wav2Vec2Config(
            **W2V, do_stable_layer_norm=True, feat_extract_norm="layer", classifier_proj_size=8, num_labels=3)),
        _w2v_padded_batch, ("Wav2Vec2Attention",)),
    "whisper": Family("whisper", _whisper, _whisper_batch, ("WhisperAttention",)),
}


@pytest.fixture(params=list(FAMILIES), ids=list(FAMILIES))
def family(request) -> Family:
    return FAMILIES[request.param]
