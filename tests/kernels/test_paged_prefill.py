"""Paged causal attention for prefill / chunked prefill / mixed batches (Triton vs reference)."""

from __future__ import annotations

import pytest
import torch

from kernels import reference_ops, triton_ops
from tests.kernels.paged import (
    assert_close,
    device,
    make_paged_cache,
    naive_attention,
    poisoned,
    query_start_loc,
)

# (q_heads, kv_heads, head_dim, block_size, query_lens, context_lens, dtype)
CASES = [
    # whole prompts of odd lengths, GQA 4:1
    (8, 2, 64, 16, [17, 5], [17, 5], torch.float32),
    # mixed: prefill + decode rows + a chunk whose earlier part is already cached
    (8, 2, 64, 16, [9, 1, 20, 1], [9, 50, 37, 1], torch.float32),
    # MHA, odd block size, a sequence with no new tokens this step
    (4, 4, 64, 5, [1, 0, 23], [17, 4, 30], torch.float32),
    # group of 3 (padded to 4 rows per token), head_dim 48
    (6, 2, 48, 16, [13, 1], [40, 2], torch.float32),
    (8, 2, 64, 16, [9, 1, 20], [9, 50, 37], torch.bfloat16),
    (4, 4, 64, 16, [33, 1], [50, 17], torch.float16),
]


def _run(q_heads, kv_heads, head_dim, block_size, q_lens, ctx_lens, dtype):
    cache = make_paged_cache(ctx_lens, kv_heads, head_dim, block_size, dtype)
    q = torch.randn(sum(q_lens), q_heads, head_dim, device=device()).to(dtype)
    starts = query_start_loc(q_lens)
    scale = head_dim**-0.5
    expected = reference_ops.paged_attention(
        q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens, starts,
        max(q_lens), scale,
    )
    out = poisoned(tuple(q.shape), dtype)
    got = triton_ops.paged_attention(
        q, cache.k_poisoned, cache.v_poisoned, cache.block_tables, cache.context_lens, starts,
        max(q_lens), scale, out=out,
    )
    assert got.data_ptr() == out.data_ptr()
    return cache, q, got, expected


@pytest.mark.parametrize("q_heads,kv_heads,head_dim,block_size,q_lens,ctx_lens,dtype", CASES)
def test_paged_attention_matches_reference(
    q_heads, kv_heads, head_dim, block_size, q_lens, ctx_lens, dtype
):
    _, _, got, expected = _run(q_heads, kv_heads, head_dim, block_size, q_lens, ctx_lens, dtype)
    assert_close(got, expected)


def test_reference_matches_float64_oracle():
    q_lens, ctx_lens = [9, 1, 20, 3], [9, 50, 37, 3]
    cache, q, _, expected = _run(8, 2, 32, 16, q_lens, ctx_lens, torch.float32)
    assert_close(expected, naive_attention(q, cache, q_lens, 32**-0.5).float())


def test_decode_only_batch_takes_the_decode_kernel_path():
    q_lens, ctx_lens = [1, 1, 1], [1, 17, 50]
    cache, q, got, expected = _run(8, 2, 64, 16, q_lens, ctx_lens, torch.float32)
    assert_close(got, expected)
    assert_close(got, naive_attention(q, cache, q_lens, 64**-0.5).float())


def test_chunked_prefill_equals_one_shot_prefill():
    """Two chunks over the cache give the rows one whole-prompt call gives."""
    n, first = 29, 12
    cache = make_paged_cache([n], 2, 64, 16, torch.float32)
    q = torch.randn(n, 8, 64, device=device())
    args = (cache.k_poisoned, cache.v_poisoned, cache.block_tables)

    def call(rows: slice, ctx: int) -> torch.Tensor:
        lens = torch.tensor([ctx], dtype=torch.int32, device=device())
        qq = q[rows]
        return triton_ops.paged_attention(
            qq, *args, lens, query_start_loc([qq.shape[0]]), qq.shape[0], 0.125
        )

    whole = call(slice(0, n), n)
    chunks = torch.cat([call(slice(0, first), first), call(slice(first, n), n)])
    assert_close(chunks, whole)


def test_paged_attention_rejects_bad_input():
    cache = make_paged_cache([4], 2, 64, 16, torch.float32)
    q = torch.randn(4, 4, 64, device=device())
    with pytest.raises(ValueError, match="query_start_loc"):
        triton_ops.paged_attention(
            q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens,
            query_start_loc([4, 0]), 4, 0.1,
        )
    with pytest.raises(ValueError, match="dtypes differ"):
        triton_ops.paged_attention(
            q.double(), cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens,
            query_start_loc([4]), 4, 0.1,
        )
