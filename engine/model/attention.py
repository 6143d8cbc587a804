"""The one attention entry point of the model; the paged/Triton issue swaps its backend."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import kernels


@dataclass
class AttentionMetadata:
    """Where this step's tokens sit in the paged KV cache.

    Tokens of all scheduled sequences are packed back to back. For sequence i, its new
    tokens are q[query_start_loc[i]:query_start_loc[i+1]] and they are the last tokens of
    its `context_lens[i]` positions (earlier ones are already in the cache).
    """

    slot_mapping: torch.Tensor  # [num_tokens] int64: cache slot of each new token
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int64
    context_lens: list[int]  # per sequence: tokens in the cache after this step
    query_start_loc: list[int]  # [num_seqs + 1] prefix sums of new tokens per sequence


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: tuple[torch.Tensor, torch.Tensor],
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Write this step's K/V into the cache, then attend over each sequence's context."""
    k_cache, v_cache = kv_cache
    kernels.write_kv_cache(k, v, k_cache, v_cache, meta.slot_mapping)
    return kernels.paged_attention(
        q, k_cache, v_cache, meta.block_tables, meta.context_lens, meta.query_start_loc, scale
    )
