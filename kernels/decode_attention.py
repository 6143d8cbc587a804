"""Decode attention over the paged KV cache: split-KV, GQA-aware, with a log-sum-exp merge.

Grid (batch, kv_heads, splits): each program walks one slice of one sequence's context,
gathering K/V rows through the block table (only the blocks the sequence owns), and
serves every query head of its KV head at once, so K/V are read once per group. A second
kernel merges the splits' partial outputs by their log-sum-exp. Softmax is online, in fp32,
in base 2 (exp2) with the scale folded into log2(e) * scale.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels._launch import out_or_new, pow2, require
from kernels.paged_tiles import (
    LOG2E,
    attn_dot,
    cache_slots,
    check_paged_inputs,
    dot_precision,
    gpu_tiles,
    interpreter_upcast,
    load_cache_tile,
)


@triton.jit
def _decode_split_kernel(
    q_ptr, k_ptr, v_ptr, table_ptr, lens_ptr, out_ptr, mid_o_ptr, mid_lse_ptr, qk_scale,
    stride_qb, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_tb, stride_ob, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    NUM_SPLITS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    ctx = tl.load(lens_ptr + seq).to(tl.int32)
    # Each split owns a BLOCK_N-aligned slice of the context; the last ones may be empty.
    per_split = tl.cdiv(tl.cdiv(ctx, NUM_SPLITS), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, ctx)

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    g_mask = g < GROUP
    d_mask = d < HEAD_DIM
    heads = kv_head * GROUP + g
    q = tl.load(q_ptr + seq * stride_qb + heads[:, None] * stride_qh + d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    table = table_ptr + seq * stride_tb
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_mask = n < end
        block, offset = cache_slots(table, n, n_mask, BLOCK_SIZE)
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = load_cache_tile(k_ptr, block, offset, kv_head, d, kv_mask,
                            stride_kb, stride_kt, stride_kh)
        s = attn_dot(q, tl.trans(k), PRECISION, UPCAST) * qk_scale
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: every tile has a live key
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = load_cache_tile(v_ptr, block, offset, kv_head, d, kv_mask,
                            stride_vb, stride_vt, stride_vh)
        acc = acc * alpha[:, None] + attn_dot(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new

    live = l_i > 0  # false for an empty split (or a zero-length context)
    o = acc / tl.where(live, l_i, 1.0)[:, None]
    out_mask = g_mask[:, None] & d_mask[None, :]
    if NUM_SPLITS == 1:
        tl.store(out_ptr + seq * stride_ob + heads[:, None] * stride_oh + d[None, :],
                 o.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        row = (seq * (GROUP * tl.num_programs(1)) + heads) * NUM_SPLITS + split
        tl.store(mid_o_ptr + row[:, None] * HEAD_DIM + d[None, :], o, mask=out_mask)
        lse = tl.where(live, m_i + tl.log2(tl.where(live, l_i, 1.0)), float("-inf"))
        tl.store(mid_lse_ptr + row, lse, mask=g_mask)


@triton.jit
def _decode_reduce_kernel(
    mid_o_ptr, mid_lse_ptr, out_ptr, stride_ob, stride_oh,
    HEAD_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    row0 = (seq * tl.num_programs(1) + head) * NUM_SPLITS
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    s_mask = s < NUM_SPLITS
    d_mask = d < HEAD_DIM
    lse = tl.load(mid_lse_ptr + row0 + s, mask=s_mask, other=float("-inf"))
    m = tl.max(lse, axis=0)
    m = tl.where(m > float("-inf"), m, 0.0)  # all splits empty: weights 0, output 0
    w = tl.exp2(lse - m)
    o = tl.load(mid_o_ptr + (row0 + s)[:, None] * HEAD_DIM + d[None, :],
                mask=s_mask[:, None] & d_mask[None, :], other=0.0)
    total = tl.sum(w, axis=0)
    merged = tl.sum(w[:, None] * o, axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + seq * stride_ob + head * stride_oh + d, merged.to(out_ptr.dtype.element_ty),
             mask=d_mask)


def choose_num_splits(batch: int, kv_heads: int, max_context: int, num_sms: int = 132) -> int:
    """Enough programs to fill the GPU twice over, but at least ~256 keys per split."""
    programs = max(batch * kv_heads, 1)
    want = math.ceil(2 * num_sms / programs)
    return max(1, min(want, math.ceil(max_context / 256), 64))


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    plan: object | None = None,
) -> torch.Tensor:
    """q [B, Hq, D], one query per sequence over its paged context -> [B, Hq, D].

    A row whose context_len is 0 gives zeros. num_splits None: chosen from the shapes
    (the block table's width bounds the context, so no device sync is needed). `plan` is
    ignored (plan_step gives None for the kernels).
    """
    del plan
    check_paged_inputs(q, k_cache, v_cache, block_tables)
    batch, q_heads, head_dim = q.shape
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    require(block_tables.shape[0] == batch and context_lens.shape == (batch,),
            f"block_tables and context_lens must have {batch} rows")
    require(context_lens.device == q.device, "context_lens must be on q's device")
    out = out_or_new(out, (batch, q_heads, head_dim), q)
    if batch == 0:
        return out
    if num_splits is None:
        num_splits = choose_num_splits(batch, kv_heads, block_tables.shape[1] * block_size)
    require(num_splits >= 1, f"num_splits must be >= 1, got {num_splits}")
    group = q_heads // kv_heads
    block_n, stages = gpu_tiles(q) if q.is_cuda else (16, 1)  # small tiles: several per test
    if num_splits == 1:
        mid_o = mid_lse = out  # unused: the split kernel writes the final output itself
    else:
        mid_o = torch.empty((batch, q_heads, num_splits, head_dim), dtype=torch.float32,
                            device=q.device)
        mid_lse = torch.empty((batch, q_heads, num_splits), dtype=torch.float32, device=q.device)
    _decode_split_kernel[(batch, kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, out, mid_o, mid_lse, scale * LOG2E,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, NUM_SPLITS=num_splits,
        BLOCK_G=max(16, pow2(group)), BLOCK_D=pow2(head_dim), BLOCK_N=block_n,
        PRECISION=dot_precision(q.dtype), UPCAST=interpreter_upcast(q),
        num_warps=4, num_stages=stages,
    )
    if num_splits > 1:
        _decode_reduce_kernel[(batch, q_heads)](
            mid_o, mid_lse, out, out.stride(0), out.stride(1),
            HEAD_DIM=head_dim, NUM_SPLITS=num_splits, BLOCK_S=pow2(num_splits),
            BLOCK_D=pow2(head_dim), num_warps=4,
        )
    return out
