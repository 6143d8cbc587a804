"""Writing K/V into the paged cache by slot mapping (Triton vs reference)."""

from __future__ import annotations

import pytest
import torch

from kernels import reference_ops, triton_ops
from tests.kernels.paged import device


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("block_size,kv_heads,head_dim", [(16, 2, 64), (5, 3, 48)])
def test_write_kv_cache(dtype, index_dtype, block_size, kv_heads, head_dim):
    tokens, num_blocks = 13, 7
    dev = device()
    # k/v as strided views of a fused projection, as the model produces them
    qkv = torch.randn(tokens, 3 * kv_heads * head_dim, device=dev).to(dtype)
    k = qkv[:, kv_heads * head_dim : 2 * kv_heads * head_dim].view(tokens, kv_heads, head_dim)
    v = qkv[:, 2 * kv_heads * head_dim :].view(tokens, kv_heads, head_dim)
    slots = torch.randperm(num_blocks * block_size, device=dev)[:tokens]
    slots[[2, 7]] = -1  # padding rows: skipped
    slots = slots.to(index_dtype)
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k_cache = torch.randn(shape, device=dev).to(dtype)
    v_cache = torch.randn(shape, device=dev).to(dtype)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    triton_ops.write_kv_cache(k, v, k_cache, v_cache, slots)
    reference_ops.write_kv_cache(k, v, k_ref, v_ref, slots.long())
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)
    # and the written rows are the tokens' own (the reference could be wrong the same way)
    written = slots.long() >= 0
    flat = k_cache.view(-1, kv_heads, head_dim)
    assert torch.equal(flat[slots.long()[written]], k[written])


def test_reference_skips_negative_slots_and_leaves_the_rest():
    k_cache = torch.zeros(2, 4, 1, 2)
    v_cache = torch.zeros(2, 4, 1, 2)
    k = torch.ones(3, 1, 2)
    reference_ops.write_kv_cache(k, 2 * k, k_cache, v_cache, torch.tensor([5, -1, 0]))
    assert k_cache.view(-1, 2).sum(1).tolist() == [2, 0, 0, 0, 0, 2, 0, 0]
    assert v_cache.view(-1, 2).sum(1).tolist() == [4, 0, 0, 0, 0, 4, 0, 0]


def test_write_kv_cache_rejects_mismatched_cache():
    k = torch.randn(2, 2, 8, device=device())
    cache = torch.zeros(3, 4, 2, 16, device=device())
    with pytest.raises(ValueError, match="head_dim"):
        triton_ops.write_kv_cache(k, k, cache, cache.clone(), torch.zeros(2, dtype=torch.int64))
