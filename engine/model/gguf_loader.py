"""GGUF files (llama.cpp's format): dequantize every tensor, undo the Q/K row permutation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

from engine.config import ModelConfig
from engine.model.checkpoint import LoadedModel, copy_weights, empty_model, sharding
from engine.model.gguf_file import GGUFFile, TensorInfo
from engine.parallel.layout import ZERO, TPLayout
from engine.tokenizer import Tokenizer

if TYPE_CHECKING:
    from engine.parallel.comm import TPComm

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
_CHUNK_ELEMENTS = 1 << 22  # rows per dequantization step: ~16 MiB of float32
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


def dequantized_rows(gf: GGUFFile, info: TensorInfo, start: int, stop: int) -> np.ndarray:
    raw = gf.raw(info, start, stop)
    if info.qtype in (Q.F32, Q.F16):
        return raw.astype(np.float32)
    return dequantize(raw, info.qtype)


def iter_tensors(
    gf: GGUFFile, config: ModelConfig, layout: TPLayout | None = None,
) -> Iterator[tuple[str, torch.Tensor, int]]:
    """(HF name, a block of rows in float32, first row): big matrices go in chunks so that
    the float32 temporaries stay small whatever the compute dtype. With a tensor-parallel
    `layout`, only the rank's rows are dequantized (a column split is cut chunk by chunk)."""
    for info in gf.tensors:
        name = hf_name(info.name)
        if name is None:
            continue
        heads = {"q_proj": config.num_heads, "k_proj": config.num_kv_heads}.get(
            name.split(".")[-2]
        )
        num_rows = gf.num_rows(info)
        split = None if layout is None else layout.split(name, tuple(info.shape))
        if split == ZERO:
            yield name, torch.zeros(tuple(info.shape)), 0
            continue
        first, stop, cols = 0, num_rows, None
        if split is not None and split.dim == 0:
            first, stop = split.start, split.stop
        elif split is not None:
            cols = slice(split.start, split.stop)
        if heads and split is not None:  # the rank's whole heads (permuted within each)
            heads = (stop - first) // config.head_dim
        # Q/K rows are permuted within heads: keep them whole (they are small).
        step = stop - first if heads else max(1, _CHUNK_ELEMENTS // info.shape[-1])
        for start in range(first, stop, step):
            w = dequantized_rows(gf, info, start, min(start + step, stop))
            w = w.reshape(-1, *info.shape[1:])
            if heads:
                w = unpermute_rows(w, heads)
            if len(info.shape) == 1:
                w = w.reshape(info.shape)
            if cols is not None:
                w = w[:, cols]
            yield name, torch.from_numpy(np.ascontiguousarray(w)), start - first
        if split is not None and split.dim == 0 and split.size > stop - first:
            # The vocabulary's last rank: zero rows past the vocabulary.
            yield name, torch.zeros(split.size - (stop - first), *info.shape[1:]), stop - first


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


def open_gguf(path: Path) -> GGUFFile:
    """The file's header and tensor table; a damaged file is a ValueError naming it."""
    try:
        return GGUFFile(path)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable GGUF file: {e}") from e


def has_low_bit_weights(path: Path) -> bool:
    """Whether any tensor is stored in a 4/5/6/8-bit format (not F32/F16/BF16): such a file
    loads as int8 on the CPU by default rather than being inflated to float."""
    gf = open_gguf(path)
    try:
        return any(t.qtype not in (Q.F32, Q.F16, Q.BF16) for t in gf.tensors)
    finally:
        gf.close()


def load_gguf(
    path: Path, dtype: torch.dtype, device: torch.device, ops: SimpleNamespace,
    comm: TPComm | None = None,
) -> LoadedModel:
    gf = open_gguf(path)
    meta = gf.metadata
    by_name = {t.name: t for t in gf.tensors}
    config = ModelConfig.from_gguf_metadata(meta, has_output="output.weight" in by_name)
    shard = sharding(comm, config)
    model = empty_model(config, dtype, device, ops, shard=shard)
    try:
        layout = None if shard is None else shard.layout
        copy_weights(model, iter_tensors(gf, config, layout), path)
        if "rope_freqs.weight" in by_name:
            info = by_name["rope_freqs.weight"]
            factors = dequantized_rows(gf, info, 0, gf.num_rows(info))
            model.rotary.reset(device, torch.from_numpy(factors.reshape(-1)))
    finally:
        gf.close()
    tokenizer = Tokenizer.from_gguf_metadata(meta)
    return LoadedModel(model, config, tokenizer, end_of_generation_ids(meta, tokenizer), path)
