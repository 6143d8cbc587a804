"""The CPU decode attention (SDPA over gathered blocks, query heads folded per KV head or
enable_gqa) against a float64 oracle."""

from __future__ import annotations

import pytest
import torch

from kernels import cpu_attention, reference_ops
from tests.kernels.paged import assert_close, make_paged_cache, naive_attention, query_start_loc

CPU = torch.device("cpu")

# (q_heads, kv_heads, head_dim, block_size, context_lens)
CASES = [
    (9, 3, 64, 16, [40]),  # SmolLM2's shape, batch 1
    (8, 2, 32, 16, [1, 17, 50, 16]),  # GQA, a context of exactly one block
    (4, 4, 16, 5, [23, 9, 1]),  # MHA, odd block size, unsorted
    (6, 1, 32, 16, [3, 300, 7, 290, 0]),  # MQA; lengths far apart (several groups); padding row
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
@pytest.mark.parametrize("q_heads,kv_heads,head_dim,block_size,lens", CASES)
def test_matches_float64_oracle(q_heads, kv_heads, head_dim, block_size, lens):
    cache = make_paged_cache(lens, kv_heads, head_dim, block_size, torch.float32)
    q = torch.randn(len(lens), q_heads, head_dim)
    scale = head_dim**-0.5
    got = cpu_attention.paged_decode_attention(
        q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens, scale
    )
    assert_close(got, naive_attention(q, cache, [1] * len(lens), scale).float())
    for i, n in enumerate(lens):
        if n == 0:  # padding rows: exact zeros
            assert torch.equal(got[i], torch.zeros_like(got[i]))


def test_far_apart_lengths_split_into_groups_with_bounded_padding():
    lens = [3, 300, 7, 290, 5]
    cache = make_paged_cache(lens, 1, 8, 16, torch.float32)
    plan = cpu_attention.build_plan(cache.block_tables, cache.context_lens, 16)
    assert len(plan.groups) == 2
    assert sorted(len(g.tables) for g in plan.groups) == [2, 3]
    assert not plan.all_rows


def test_plan_is_rebuilt_when_lengths_change_in_place():
    """A plan follows the tensors' values: one written in place is a new step."""
    lens = [5, 20]
    cache = make_paged_cache(lens, 2, 16, 16, torch.float32)
    q = torch.randn(2, 4, 16)
    first = cpu_attention.paged_decode_attention(
        q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens, 0.25
    )
    cache.context_lens[1] = 9  # fewer visible keys now
    second = cpu_attention.paged_decode_attention(
        q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens, 0.25
    )
    # Row 0 sees the same keys (alone in its group, then masked in a group of two: the
    # same numbers up to summation order).
    assert_close(first[0], second[0])
    assert not torch.allclose(first[1], second[1])
    assert_close(second, naive_attention(q, cache, [1, 1], 0.25).float())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_mixed_prefill_and_decode_step_matches_oracle():
    """A mixed step: decode rows and prefill rows, each by its own path, match the oracle."""
    lens, q_lens = [30, 12, 45, 1], [1, 12, 1, 1]
    cache = make_paged_cache(lens, 2, 32, 16, torch.float32)
    q = torch.randn(sum(q_lens), 6, 32)
    got = reference_ops.paged_attention(
        q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens,
        query_start_loc(q_lens), max(q_lens), 0.2,
    )
    assert_close(got, naive_attention(q, cache, q_lens, 0.2).float())


@pytest.mark.parametrize("lens,fold", [
    ([200, 190, 180, 170], True),  # one group of 4 x 208 keys, the shorter ones masked
    # past FOLD_MAX_KEYS in all: enable_gqa
    ([cpu_attention.FOLD_MAX_KEYS // 2 + 40, cpu_attention.FOLD_MAX_KEYS // 2], False),
    ([cpu_attention.FOLD_MAX_KEYS + 40], True),  # one sequence: folded at any length
])
def test_both_sdpa_calls_match_oracle(lens, fold):
    cache = make_paged_cache(lens, 2, 16, 16, torch.float32)
    plan = cpu_attention.build_plan(cache.block_tables, cache.context_lens, 16)
    assert [g.fold for g in plan.groups] == [fold]
    q = torch.randn(len(lens), 4, 16)
    got = cpu_attention.paged_decode_attention(
        q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens, 0.25
    )
    assert_close(got, naive_attention(q, cache, [1] * len(lens), 0.25).float())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
@pytest.mark.parametrize("q_lens", [[5, 1], [2, 9, 1], [cpu_attention.SMALL_CHUNK_MAX, 33]])
def test_small_chunks_over_a_cached_context_match_oracle(q_lens):
    """Chunks of up to SMALL_CHUNK_MAX queries past a cached context (speculative
    verification) take the matmul path; longer ones SDPA; both causal."""
    lens = [40 + n for n in q_lens]
    cache = make_paged_cache(lens, 3, 32, 16, torch.float32)
    q = torch.randn(sum(q_lens), 9, 32)
    got = reference_ops.paged_attention(
        q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens,
        query_start_loc(q_lens), max(q_lens), 0.2,
    )
    assert_close(got, naive_attention(q, cache, q_lens, 0.2).float())
