"""The one attention entry point of the model, over the paged KV cache."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch


@dataclass
class AttentionMetadata:
    """Where this step's tokens sit in the paged KV cache (all tensors on the model's device).

    Tokens of all scheduled sequences are packed back to back. For sequence i, its new
    tokens are q[query_start_loc[i]:query_start_loc[i+1]] and they are the last tokens of
    its `context_lens[i]` positions (earlier ones are already in the cache).
    """

    slot_mapping: torch.Tensor  # [num_tokens] int64: cache slot of each new token (<0: skip)
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int32
    context_lens: torch.Tensor  # [num_seqs] int32: tokens in the cache after this step
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32: prefix sums of new tokens
    max_query_len: int  # 1 means a pure decode step
    # KV splits of the decode kernel; fixed when a CUDA graph replays the step, else None
    # and the kernel chooses.
    decode_splits: int | None = None
    # The kernel namespace's plan of this step (ops.plan_step: rotary tables, padding,
    # decode grouping), made once per forward by the model; None outside a forward.
    plan: object | None = None


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: tuple[torch.Tensor, torch.Tensor],
    meta: AttentionMetadata,
    scale: float,
    ops: SimpleNamespace,
) -> torch.Tensor:
    """Write this step's K/V into the cache, then attend over each sequence's context."""
    k_cache, v_cache = kv_cache
    ops.write_kv_cache(k, v, k_cache, v_cache, meta.slot_mapping, meta.plan)
    if meta.max_query_len == 1:
        return ops.paged_decode_attention(
            q, k_cache, v_cache, meta.block_tables, meta.context_lens, scale, meta.decode_splits,
            plan=meta.plan,
        )
    return ops.paged_attention(
        q, k_cache, v_cache, meta.block_tables, meta.context_lens, meta.query_start_loc,
        meta.max_query_len, scale,
    )
