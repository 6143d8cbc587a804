"""GGUF files (llama.cpp's format): dequantize every tensor, undo the Q/K row permutation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize

from engine.config import ModelConfig
from engine.model.loader import LoadedModel, copy_weights, empty_model
from engine.tokenizer import Tokenizer

# llama.cpp tensor names -> HF names (per-layer names are under blk.N.)
_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
# Control tokens that end a turn in the chat formats we know; llama.cpp stops on them too.
_END_OF_GENERATION = {"<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "</s>"}


def hf_name(gguf_name: str) -> str | None:
    if gguf_name in _GLOBAL:
        return _GLOBAL[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _LAYER:
        return f"model.layers.{parts[1]}.{_LAYER[parts[2]]}.{parts[3]}"
    return None


def unpermute_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Invert llama.cpp's convert permutation of Q/K rows (interleaved -> HF rotate-half)."""
    rows = w.shape[0]
    return w.reshape(num_heads, rows // num_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape
    )


def read_metadata(reader: GGUFReader) -> dict[str, Any]:
    return {key: field.contents() for key, field in reader.fields.items()}


def iter_tensors(reader: GGUFReader, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            continue
        w = dequantize(t.data, GGMLQuantizationType(t.tensor_type)).astype(np.float32, copy=False)
        if name.endswith("q_proj.weight"):
            w = unpermute_rows(w, config.num_heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute_rows(w, config.num_kv_heads)
        yield name, torch.from_numpy(np.array(w, copy=not w.flags.writeable))


def end_of_generation_ids(meta: dict[str, Any], tokenizer: Tokenizer) -> frozenset[int]:
    ids = {meta.get(k) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                  "tokenizer.ggml.eom_token_id")}
    tokens = meta.get("tokenizer.ggml.tokens", [])
    types = meta.get("tokenizer.ggml.token_type", [])
    for i, (text, kind) in enumerate(zip(tokens, types)):
        if kind == 3 and text in _END_OF_GENERATION:  # 3 = control token
            ids.add(i)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(int(i) for i in ids if i is not None)


def load_gguf(path: Path, dtype: torch.dtype, device: torch.device) -> LoadedModel:
    try:
        reader = GGUFReader(path)
    except Exception as e:  # the reader fails in many ways on a corrupt file; name the file
        raise ValueError(f"{path} is not a readable GGUF file: {e}") from e
    meta = read_metadata(reader)
    names = {t.name for t in reader.tensors}
    config = ModelConfig.from_gguf_metadata(meta, has_output="output.weight" in names)
    model = empty_model(config, dtype, device)
    copy_weights(model, iter_tensors(reader, config), path)
    rope = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
    if rope is not None:
        model.rotary.reset(device, torch.from_numpy(np.array(rope.data, dtype=np.float32)))
    tokenizer = Tokenizer.from_gguf_metadata(meta)
    return LoadedModel(model, config, tokenizer, end_of_generation_ids(meta, tokenizer), path)
