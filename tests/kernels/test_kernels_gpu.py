"""The Triton kernels at real sizes on a GPU, against the references and SDPA on contiguous K/V."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels import reference_ops, triton_ops
from tests.kernels.paged import (
    PagedCache,
    assert_close,
    make_paged_cache,
    poisoned,
    query_start_loc,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _sdpa_rows(q: torch.Tensor, cache: PagedCache, seq: int, q_len: int, scale: float):
    """SDPA on this sequence's K/V gathered into contiguous [kv_heads, ctx, D] tensors."""
    ctx = int(cache.context_lens[seq])
    block_size = cache.k_cache.shape[1]
    pos = torch.arange(ctx, device=q.device)
    blocks = cache.block_tables[seq].long()[pos // block_size]
    k = cache.k_cache[blocks, pos % block_size].transpose(0, 1).contiguous()
    v = cache.v_cache[blocks, pos % block_size].transpose(0, 1).contiguous()
    q_pos = torch.arange(ctx - q_len, ctx, device=q.device)
    mask = pos[None, :] <= q_pos[:, None]
    o = F.scaled_dot_product_attention(
        q.transpose(0, 1), k, v, attn_mask=mask, scale=scale, enable_gqa=True
    )
    return o.transpose(0, 1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("splits", [None, 1, 4, 16])
@pytest.mark.parametrize("q_heads,kv_heads,head_dim", [(32, 8, 128), (9, 3, 64)])
def test_decode_real_sizes(dtype, splits, q_heads, kv_heads, head_dim):
    lens = [1, 17, 4096, 0, 1000, 2500, 8191] + torch.randint(1, 3000, (9,)).tolist()
    cache = make_paged_cache(lens, kv_heads, head_dim, 16, dtype)
    q = torch.randn(len(lens), q_heads, head_dim, device="cuda").to(dtype)
    scale = head_dim**-0.5
    got = triton_ops.paged_decode_attention(
        q, cache.k_poisoned, cache.v_poisoned, cache.block_tables, cache.context_lens, scale,
        num_splits=splits, out=poisoned(tuple(q.shape), dtype),
    )
    expected = reference_ops.paged_decode_attention(
        q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens, scale
    )
    assert_close(got, expected)
    for i, n in enumerate(lens):
        if n:
            assert_close(got[i : i + 1], _sdpa_rows(q[i : i + 1], cache, i, 1, scale))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("q_heads,kv_heads,head_dim", [(32, 8, 128), (9, 3, 64), (16, 16, 64)])
def test_mixed_prefill_real_sizes(dtype, q_heads, kv_heads, head_dim):
    # whole prompts, chunks over a cached prefix, and decode rows in one batch
    q_lens = [1000, 1, 257, 1, 64, 511]
    ctx = [1000, 3000, 1300, 5, 64, 2048]
    cache = make_paged_cache(ctx, kv_heads, head_dim, 16, dtype)
    q = torch.randn(sum(q_lens), q_heads, head_dim, device="cuda").to(dtype)
    starts, scale = query_start_loc(q_lens), head_dim**-0.5
    got = triton_ops.paged_attention(
        q, cache.k_poisoned, cache.v_poisoned, cache.block_tables, cache.context_lens, starts,
        max(q_lens), scale, out=poisoned(tuple(q.shape), dtype),
    )
    expected = reference_ops.paged_attention(
        q, cache.k_cache, cache.v_cache, cache.block_tables, cache.context_lens, starts,
        max(q_lens), scale,
    )
    assert_close(got, expected)
    row = 0
    for i, n in enumerate(q_lens):
        assert_close(got[row : row + n], _sdpa_rows(q[row : row + n], cache, i, n, scale))
        row += n


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_elementwise_real_sizes(dtype):
    tokens, hidden, inter = 333, 4096, 14336
    x = torch.randn(tokens, hidden, device="cuda").to(dtype)
    res = torch.randn(tokens, hidden, device="cuda").to(dtype)
    w = torch.randn(hidden, device="cuda").to(dtype)
    assert_close(triton_ops.rms_norm(x, w, 1e-5), reference_ops.rms_norm(x, w, 1e-5))
    for got, ref in zip(triton_ops.fused_add_rms_norm(x, res, w, 1e-5),
                        reference_ops.fused_add_rms_norm(x, res, w, 1e-5)):
        assert_close(got, ref)
    gate_up = torch.randn(tokens, 2 * inter, device="cuda").to(dtype)
    assert_close(triton_ops.silu_and_mul(gate_up), reference_ops.silu_and_mul(gate_up))
    positions = torch.randint(0, 8192, (tokens,), device="cuda")
    inv_freq = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, device="cuda") / 128))
    xq = torch.randn(tokens, 32, 128, device="cuda").to(dtype)
    exact = reference_ops.rotary_embedding(positions, xq.float(), inv_freq)
    assert_close(triton_ops.rotary_embedding(positions, xq, inv_freq), exact.to(dtype))


def test_write_kv_cache_real_sizes():
    tokens, kv_heads, head_dim, num_blocks = 777, 8, 128, 200
    k = torch.randn(tokens, kv_heads, head_dim, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    slots = torch.randperm(num_blocks * 16, device="cuda")[:tokens]
    slots[::7] = -1
    caches = [torch.randn(num_blocks, 16, kv_heads, head_dim, device="cuda",
                          dtype=torch.bfloat16) for _ in range(2)]
    refs = [c.clone() for c in caches]
    triton_ops.write_kv_cache(k, v, *caches, slots)
    reference_ops.write_kv_cache(k, v, *refs, slots)
    assert torch.equal(caches[0], refs[0]) and torch.equal(caches[1], refs[1])
