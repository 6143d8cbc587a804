"""Split-KV decode attention (Triton) against the torch reference and a float64 oracle."""

from __future__ import annotations

import pytest
import torch

from kernels import reference_ops, triton_ops
from tests.kernels.paged import assert_close, device, make_paged_cache, naive_attention, poisoned

# (q_heads, kv_heads, head_dim, block_size, context_lens, dtype, num_splits)
CASES = [
    (8, 2, 64, 16, [1, 17, 50], torch.float32, 1),  # GQA 4:1
    (8, 2, 64, 16, [50, 1, 0, 33], torch.float32, 3),  # a zero-length (padding) row
    (4, 4, 64, 16, [17, 50], torch.float32, 2),  # MHA
    (6, 2, 48, 5, [23, 9, 1], torch.float32, 7),  # group 3, head_dim 48, odd block size
    (8, 2, 64, 16, [1, 17, 50], torch.bfloat16, 2),
    (4, 4, 64, 16, [70, 3], torch.float16, None),  # the launcher picks the splits
    (8, 1, 32, 16, [40], torch.bfloat16, 4),  # MQA
]


@pytest.mark.parametrize("q_heads,kv_heads,head_dim,block_size,lens,dtype,splits", CASES)
def test_decode_matches_reference(q_heads, kv_heads, head_dim, block_size, lens, dtype, splits):
    cache = make_paged_cache(lens, kv_heads, head_dim, block_size, dtype)
    q = torch.randn(len(lens), q_heads, head_dim, device=device()).to(dtype)
    scale = head_dim**-0.5
    expected = reference_ops.paged_decode_attention(
        q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens, scale
    )
    out = poisoned(tuple(q.shape), dtype)
    got = triton_ops.paged_decode_attention(
        q, cache.k_poisoned, cache.v_poisoned, cache.block_tables, cache.context_lens, scale,
        num_splits=splits, out=out,
    )
    assert got.data_ptr() == out.data_ptr()
    assert_close(got, expected)
    for i, n in enumerate(lens):
        if n == 0:  # CUDA-graph padding rows: exact zeros, never NaN
            assert torch.equal(got[i], torch.zeros_like(got[i]))


@pytest.mark.parametrize("lens", [[1, 17, 50, 0], [5]])
def test_reference_decode_matches_float64_oracle(lens):
    cache = make_paged_cache(lens, 2, 32, 16, torch.float32)
    q = torch.randn(len(lens), 6, 32, device=device())
    expected = naive_attention(q, cache, [1] * len(lens), 0.3)
    got = reference_ops.paged_decode_attention(
        q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens, 0.3
    )
    assert_close(got, expected.float())


def test_decode_accepts_int64_indices_and_any_split_count_agrees():
    lens = [19, 50, 2]
    cache = make_paged_cache(lens, 2, 64, 16, torch.float32, index_dtype=torch.int64)
    q = torch.randn(len(lens), 4, 64, device=device())
    outs = [
        triton_ops.paged_decode_attention(
            q, cache.k_poisoned, cache.v_poisoned, cache.block_tables, cache.context_lens, 0.125,
            num_splits=s,
        )
        for s in (1, 2, 5)
    ]
    expected = naive_attention(q, cache, [1] * len(lens), 0.125).float()
    for got in outs:
        assert_close(got, expected)


def test_decode_rejects_bad_input():
    cache = make_paged_cache([4], 2, 64, 16, torch.float32)
    q = torch.randn(1, 3, 64, device=device())  # 3 query heads over 2 kv heads
    with pytest.raises(ValueError, match="multiple of kv heads"):
        triton_ops.paged_decode_attention(
            q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens, 0.1
        )
    q = torch.randn(1, 4, 64, device=device())
    with pytest.raises(ValueError, match="num_splits"):
        triton_ops.paged_decode_attention(
            q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens, 0.1,
            num_splits=0,
        )
