"""Causal flash attention over the paged KV cache for prefill, chunked prefill and mixed batches.

The new tokens' K/V are already in the cache, so every key comes from it, earlier chunks
and cached prefixes included. Grid (sequence, query tile, kv_head): a program takes
BLOCK_Q consecutive query tokens of one sequence times all GROUP query heads of one KV
head as its BLOCK_M = BLOCK_Q * GROUP_PAD rows, so each K/V tile it gathers feeds the
whole head group (GQA) and decode rows (qlen 1) in a mixed batch waste little. Query token
j of a sequence with qlen new tokens and ctx cached positions sits at ctx - qlen + j and
sees keys 0..that position.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._launch import out_or_new, pow2, require
from kernels.decode_attention import paged_decode_attention
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
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, table_ptr, lens_ptr, starts_ptr, qk_scale,
    stride_qt, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_tb, stride_ot, stride_oh,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    kv_head = tl.program_id(2)
    q_start = tl.load(starts_ptr + seq).to(tl.int64)
    q_len = (tl.load(starts_ptr + seq + 1) - q_start).to(tl.int32)
    if tile * BLOCK_Q >= q_len:  # the grid is sized for the longest query; this one is shorter
        return
    ctx = tl.load(lens_ptr + seq).to(tl.int32)

    r = tl.arange(0, BLOCK_M)
    tok = tile * BLOCK_Q + r // GROUP_PAD
    g = r % GROUP_PAD
    row_mask = (tok < q_len) & (g < GROUP)
    heads = kv_head * GROUP + g
    q_pos = ctx - q_len + tok  # absolute position of each row's query token
    d = tl.arange(0, BLOCK_D)
    d_mask = d < HEAD_DIM
    q_rows = q_start + tok
    q = tl.load(q_ptr + q_rows[:, None] * stride_qt + heads[:, None] * stride_qh + d[None, :],
                mask=row_mask[:, None] & d_mask[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    table = table_ptr + seq * stride_tb
    # Keys up to the tile's last query position; key 0 is visible to every row (padding
    # rows included), so the first tile makes every running max finite.
    kv_end = ctx - q_len + tl.minimum((tile + 1) * BLOCK_Q, q_len)
    for n0 in range(0, kv_end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_mask = n < kv_end
        block, offset = cache_slots(table, n, n_mask, BLOCK_SIZE)
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = load_cache_tile(k_ptr, block, offset, kv_head, d, kv_mask,
                            stride_kb, stride_kt, stride_kh)
        s = attn_dot(q, tl.trans(k), PRECISION, UPCAST) * qk_scale
        visible = n_mask[None, :] & (n[None, :] <= q_pos[:, None])
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = load_cache_tile(v_ptr, block, offset, kv_head, d, kv_mask,
                            stride_vb, stride_vt, stride_vh)
        acc = acc * alpha[:, None] + attn_dot(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new

    o = acc / l_i[:, None]
    tl.store(out_ptr + q_rows[:, None] * stride_ot + heads[:, None] * stride_oh + d[None, :],
             o.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & d_mask[None, :])


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    max_query_len: int,
    scale: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [T, Hq, D] packed by query_start_loc [S+1] -> causal attention over the paged cache.

    Every sequence needs context_lens[i] >= its query length (its new K/V already written),
    and max_query_len >= every query length (it sizes the grid; checking would cost a sync).
    A decode-only batch (max_query_len 1) goes to the split-KV decode kernel.
    """
    check_paged_inputs(q, k_cache, v_cache, block_tables)
    seqs = context_lens.shape[0]
    require(context_lens.dim() == 1 and block_tables.shape[0] == seqs,
            f"context_lens must be [seqs] and block_tables [seqs, max_blocks] with {seqs} rows")
    require(query_start_loc.shape == (seqs + 1,),
            f"query_start_loc must be [{seqs + 1}], got {tuple(query_start_loc.shape)}")
    require(context_lens.device == q.device and query_start_loc.device == q.device,
            "context_lens and query_start_loc must be on q's device")
    tokens, q_heads, head_dim = q.shape
    out = out_or_new(out, (tokens, q_heads, head_dim), q)
    if tokens == 0 or seqs == 0:
        return out
    require(max_query_len >= 1, f"max_query_len must be >= 1, got {max_query_len}")
    if max_query_len == 1 and tokens == seqs:  # pure decode: one query row per sequence
        return paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale,
                                      out=out)
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = q_heads // kv_heads
    group_pad = pow2(group)
    on_gpu = q.is_cuda
    max_rows = 64 if on_gpu else 16
    block_n = gpu_tiles(q)[0] if on_gpu else 16
    # Rows = query tokens x the head group; short queries (decode rows mixed in) get short tiles.
    block_m = max(16, min(max(max_rows, group_pad), pow2(max_query_len * group_pad)))
    block_q = block_m // group_pad
    grid = (seqs, triton.cdiv(max_query_len, block_q), kv_heads)
    _prefill_kernel[grid](
        q, k_cache, v_cache, out, block_tables, context_lens, query_start_loc, scale * LOG2E,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1),
        GROUP=group, GROUP_PAD=group_pad, HEAD_DIM=head_dim, BLOCK_SIZE=block_size,
        BLOCK_Q=block_q, BLOCK_M=block_m, BLOCK_D=pow2(head_dim), BLOCK_N=block_n,
        PRECISION=dot_precision(q.dtype), UPCAST=interpreter_upcast(q),
        num_warps=4, num_stages=2 if on_gpu else 1,
    )
    return out
