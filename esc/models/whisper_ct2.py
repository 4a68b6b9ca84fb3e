"""Import Whisper from a CTranslate2 model directory (faster-whisper layout) into transformers.

A CTranslate2 directory holds `model.bin` (binary version 6), `config.json` (suppress ids, alignment heads) and
`tokenizer.json`. The reader is plain numpy, so no ctranslate2 install is needed. Float16 weights are upcast to
float32, which is exact: the imported model is a faithful full-precision reference. This module reads the binary
format and maps its variables to transformers names; `esc.models.whisper_ct2_loader` builds the model, processor
and generation config from a directory, and `esc.models.whisper_ct2_writer` (the inverse) shares the name table.
"""

from __future__ import annotations

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
    enc, dec = (count_layers(variables, side) for side in ("encoder", "decoder"))
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


def count_layers(variables: dict, side: str) -> int:
    """How many layers the CTranslate2 variables hold on `side` ("encoder" or "decoder")."""
    found = {int(m.group(1)) for n in variables if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    return max(found) + 1 if found else 0
