"""Pooled embeddings from a Llama model: its final hidden states, mean or last token.

Runs the model's own forward through ModelRunner.prepare over a scratch KV cache sized to
the batch, so the engine's paged cache (and its running requests) are never touched.
Call it on the thread that owns the engine's torch work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.embedding.pooling import PoolingConfig, pool_packed
from engine.embedding.sentence_encoder import EmbedInput, check_token_ids, too_long
from engine.model.llama import LlamaForCausalLM
from engine.tokenizer import Tokenizer
from engine.worker.model_runner import ModelRunner, SequenceChunk

DECODER_POOLING = ("mean", "last")


def decoder_pooling(pooling: str = "mean", normalize: bool = True) -> PoolingConfig:
    if pooling not in DECODER_POOLING:
        raise ValueError(f"pooling {pooling!r} is not supported for decoder models; use one "
                         f"of {', '.join(DECODER_POOLING)}")
    return PoolingConfig(pooling, normalize)


def tokenize_for_decoder(tokenizer: Tokenizer, vocab_size: int, limit: int,
                         inputs: Sequence[EmbedInput], truncate: bool = False) -> list[list[int]]:
    """Texts through the model's tokenizer (BOS as the model wants it); ids as given.
    Inputs longer than `limit` tokens raise ValueError unless `truncate` cuts them."""
    out = []
    for item in inputs:
        if isinstance(item, str):
            if not item:
                raise ValueError("input must not be an empty string")
            ids = tokenizer.encode(item)
        else:
            ids = check_token_ids(item, vocab_size)
        if truncate:
            ids = ids[:limit]
        if len(ids) > limit:
            raise too_long(len(ids), limit)
        out.append(ids)
    return out


def _batches(id_lists: Sequence[list[int]], max_tokens: int) -> list[list[int]]:
    """Indices grouped so each group's tokens stay within max_tokens (one long input alone)."""
    groups: list[list[int]] = [[]]
    used = 0
    for i, ids in enumerate(id_lists):
        if groups[-1] and used + len(ids) > max_tokens:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += len(ids)
    return groups


@torch.inference_mode()
def embed_with_decoder(model: LlamaForCausalLM, device: torch.device, block_size: int,
                       max_batched_tokens: int, id_lists: Sequence[list[int]],
                       pooling: PoolingConfig) -> torch.Tensor:
    """[n, hidden] float32 pooled final hidden states, one row per token-id list; forwards
    of at most `max_batched_tokens` tokens (a longer input runs alone)."""
    if not id_lists:
        return torch.empty(0, model.config.hidden_size)
    bs = block_size
    groups = _batches(id_lists, max_batched_tokens)
    # One scratch cache, sized for the largest group (a group may hold one long input).
    blocks = max(sum(-(-len(id_lists[i]) // bs) for i in g) for g in groups)
    scratch = ModelRunner(model, blocks, bs, device)
    rows: list[torch.Tensor] = []
    for group in groups:
        chunks, next_block = [], 0
        for i in group:
            need = -(-len(id_lists[i]) // bs)
            chunks.append(SequenceChunk(id_lists[i], 0, list(range(next_block, next_block + need))))
            next_block += need
        input_ids, positions, meta = scratch.prepare(chunks)
        hidden = model(input_ids, positions, scratch.kv_caches, meta)
        rows.append(pool_packed(hidden, meta.query_start_loc.tolist(), pooling).cpu())
    return torch.cat(rows)
