"""Write a transformers Whisper as a CTranslate2 directory (the inverse of `esc.models.whisper_ct2`).

Used by the tests to build tiny models in the CTranslate2 format, and by users to export a (quantization-free)
Whisper for CTranslate2/faster-whisper. The name table is the reader's; only its direction is reversed here.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np

from esc.models.whisper_ct2 import (BINARY_VERSION, DTYPES, EXPECTED_FLAGS, PARAM_NAMES, WHISPER_SPEC, ct2_params,
                                    module_map)

_DTYPE_IDS = {dtype: i for i, dtype in DTYPES.items() if i != 5}  # bfloat16 (id 5) is never written
# Rank-0 flags CTranslate2's converter writes for Whisper besides EXPECTED_FLAGS (values as in tiny.en's export).
_INT16_FLAGS = {"decoder/alignment_heads": 1, "decoder/alignment_layer": -1}


def _string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"  # the u16 length counts the trailing NUL
    return struct.pack("<H", len(raw)) + raw


def write_ct2_model_bin(path: str | Path, variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None,
                        *, spec: str = WHISPER_SPEC, revision: int = 3) -> Path:
    """Write `variables` (name -> array of float32/float16/int8/int16/int32) as a CTranslate2 version-6 model.bin.

    Low level: no check that the variables form a valid spec (the tests use it to write broken files).
    """
    path = Path(path)
    with open(path, "wb") as f:
        f.write(struct.pack("<I", BINARY_VERSION) + _string(spec) + struct.pack("<II", revision, len(variables)))
        for name in sorted(variables):  # CTranslate2's converter writes them sorted too
            array = np.asarray(variables[name])  # not ascontiguousarray: it turns rank-0 flags into shape (1,)
            array = array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)
            type_id, data = _DTYPE_IDS[array.dtype], array.tobytes()
            f.write(_string(name) + struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape))
            f.write(struct.pack("<BI", type_id, len(data)) + data)
        aliases = aliases or {}
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            f.write(_string(alias) + _string(target))
    return path


def transformers_to_ct2(state_dict: dict, encoder_layers: int, decoder_layers: int) -> dict[str, np.ndarray]:
    """Map a WhisperForConditionalGeneration state dict to CTranslate2 names (float32 numpy arrays).

    Fused projections are concatenated in the table's order; the missing k bias becomes zeros, as CTranslate2 stores.
    """
    arrays = {k: v.detach().to("cpu").float().numpy() for k, v in state_dict.items()}
    variables = {}
    for module, targets in module_map(encoder_layers, decoder_layers):
        for param in ct2_params(module):
            names = [f"{t}.{PARAM_NAMES[param]}" for t in targets]
            if not any(n in arrays for n in names):
                continue  # e.g. the embeddings have no bias
            rows = [arrays[f"{t}.weight"].shape[0] for t in targets]
            variables[f"{module}/{param}"] = np.concatenate(
                [arrays[n] if n in arrays else np.zeros(r, np.float32) for n, r in zip(names, rows)], axis=0)
    return variables


def write_ct2_whisper(model, tokenizer_json: str | Path | None, directory: str | Path, *,
                      dtype: str = "float16") -> Path:
    """Write a transformers `WhisperForConditionalGeneration` as a CTranslate2 directory.

    Writes `model.bin` (weights as `dtype`: "float16" or "float32"), `config.json` (suppress ids and alignment
    heads from `model.generation_config`) and, when `tokenizer_json` is given, a copy of it plus
    `vocabulary.txt` (CTranslate2 itself needs the vocabulary to load the model; `load_ct2_whisper` needs
    `tokenizer.json`). Returns the directory.
    """
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    cfg = model.config
    if cfg.scale_embedding or cfg.activation_function != "gelu":
        raise ValueError("CTranslate2's WhisperSpec needs activation 'gelu' and no embedding scaling")
    state = model.state_dict()
    head, embeddings = state.get("proj_out.weight"), state["model.decoder.embed_tokens.weight"]
    if head is not None and not head.equal(embeddings):
        raise ValueError("proj_out.weight differs from the token embeddings; CTranslate2's Whisper ties them")
    variables = {k: v.astype(dtype) for k, v in
                 transformers_to_ct2(state, cfg.encoder_layers, cfg.decoder_layers).items()}
    variables["encoder/num_heads"] = np.array(cfg.encoder_attention_heads, np.int16)
    variables["decoder/num_heads"] = np.array(cfg.decoder_attention_heads, np.int16)
    variables.update({k: np.array(v, np.int8) for k, v in EXPECTED_FLAGS.items()})
    variables.update({k: np.array(v, np.int16) for k, v in _INT16_FLAGS.items()})

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_ct2_model_bin(directory / "model.bin", variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    gen = model.generation_config
    # CTranslate2's converter default when a model has no alignment heads: every head of the second half of layers.
    heads = getattr(gen, "alignment_heads", None) or [
        [layer, h] for layer in range(cfg.decoder_layers // 2, cfg.decoder_layers)
        for h in range(cfg.decoder_attention_heads)]
    config = {"alignment_heads": [list(map(int, p)) for p in heads], "lang_ids": [],
              "suppress_ids": list(getattr(gen, "suppress_tokens", None) or []),
              "suppress_ids_begin": list(getattr(gen, "begin_suppress_tokens", None) or [])}
    if tokenizer_json is not None:
        shutil.copyfile(tokenizer_json, directory / "tokenizer.json")
        tok = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
        ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
        ids.update(tok["model"]["vocab"])
        by_id = sorted(ids, key=ids.get)
        # tokenizer.json stops at <|notimestamps|>; the timestamp tokens <|0.00|>, <|0.02|>, ... fill the rest.
        by_id += [f"<|{0.02 * i:.2f}|>" for i in range(cfg.vocab_size - len(by_id))]
        (directory / "vocabulary.txt").write_text("".join(t + "\n" for t in by_id), encoding="utf-8")
        if "<|startoftranscript|>" in ids and "<|translate|>" in ids:  # language tokens lie between these two
            config["lang_ids"] = list(range(ids["<|startoftranscript|>"] + 1, ids["<|translate|>"]))
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory
