"""Decode attention for the CPU: SDPA over the gathered KV blocks, each KV head's query
heads folded into its queries where that measured faster.

torch's SDPA with enable_gqa (one query per head) reads each KV head once per query head
that shares it; folded, the heads sharing a KV head are that head's queries ([g, kv_heads,
group, D]) and each KV head is read once. Measured by benchmarks/cpu_attention.py (see
FOLD_MAX_KEYS). Every layer of a step sees the same block tables and lengths, so the
padding plan (groups, masks, trimmed tables, which call) is built once per step, by the
caller (CpuOps.plan_step), and passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# A decode group is padded to its longest context; a sequence joins the current group
# while the padded size stays within this factor of the real one (lengths sorted).
MAX_PADDING = 1.5
# The folded call is used for one sequence, and for a group of at most this many padded keys
# in all (sequences x padded context); larger groups take the enable_gqa call. Measured by
# benchmarks/cpu_attention.py (SmolLM2 shape: 9 query heads over 3 KV heads, 1 thread, busy
# 2-core machine, interleaved; enable_gqa time / folded time, several runs): one sequence
# 1.01-1.3x at 16-1024 keys, 1.61x at 4096; groups of 4-32 sequences up to 8,192 keys
# 1.04-1.29x (32 x 128: 1.16-1.18, 32 x 256: 1.14-1.29, 16 x 512: 1.15, 8 x 1024: 1.13-1.15).
# Past that the folded call fell off a cliff in some runs and not others (16 x 600:
# 0.51-1.29, 32 x 384: 0.93-1.22, 32 x 512: 0.38-1.24, 32 x 1024: 0.41-1.1), so those groups
# keep enable_gqa. The former two-batched-matmuls path lost to the folded call at every
# point (1.15-4x).
FOLD_MAX_KEYS = 8192


@dataclass
class DecodeGroup:
    rows: torch.Tensor | None  # rows of q in this group (None: all rows, in order)
    tables: torch.Tensor  # [group, blocks] block tables trimmed to the longest context
    flat: torch.Tensor  # tables as one row of block ids (the gather's index)
    keep: torch.Tensor | None  # [group, 1, 1, padded_len] True where a key is real (None: all)
    length: int | None  # a group of one sequence: its keys are cut to this (no mask)
    fold: bool  # query heads folded per KV head (FOLD_MAX_KEYS), else enable_gqa


@dataclass
class DecodePlan:
    groups: list[DecodeGroup]
    all_rows: bool  # one group covers every row: the output needs no scatter


def _group_bounds(lens: list[int]) -> list[tuple[int, int]]:
    """Consecutive [start, stop) groups over ascending lengths, bounded padding each."""
    bounds, start, total = [], 0, 0
    for j, n in enumerate(lens):
        if j > start and n * (j - start + 1) > MAX_PADDING * (total + n):
            bounds.append((start, j))
            start, total = j, 0
        total += n
    if start < len(lens):
        bounds.append((start, len(lens)))
    return bounds


def build_plan(block_tables: torch.Tensor, context_lens: torch.Tensor, block_size: int) -> DecodePlan:
    lens = [int(n) for n in context_lens.tolist()]
    # Zero-length rows are CUDA-graph padding: they stay out of every group (output zeros).
    order = sorted((i for i, n in enumerate(lens) if n > 0), key=lambda i: lens[i])
    in_order = order == list(range(len(lens)))
    groups = []
    sorted_lens = [lens[i] for i in order]
    for start, stop in _group_bounds(sorted_lens):
        rows = order[start:stop]
        max_len = sorted_lens[stop - 1]
        nblocks = -(-max_len // block_size)
        idx = None if in_order and len(rows) == len(lens) else torch.tensor(rows)
        tables = block_tables if idx is None else block_tables.index_select(0, idx)
        tables = tables[:, :nblocks].to(torch.long)
        keep = None
        length = max_len if stop - start == 1 else None
        if length is None and sorted_lens[start] < nblocks * block_size:  # padded key slots
            glens = torch.tensor(sorted_lens[start:stop])
            pos = torch.arange(nblocks * block_size)
            keep = (pos[None, :] < glens[:, None])[:, None, None, :]
        fold = len(rows) == 1 or len(rows) * nblocks * block_size <= FOLD_MAX_KEYS
        groups.append(DecodeGroup(idx, tables, tables.reshape(-1), keep, length, fold))
    all_rows = len(groups) == 1 and groups[0].rows is None
    return DecodePlan(groups, all_rows)


def _attend(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, group: DecodeGroup,
    scale: float,
) -> torch.Tensor:
    """q [g, heads, D] over the group's gathered context -> [g, heads, D]."""
    b, heads, dim = q.shape
    kv_heads = k_cache.shape[2]
    padded = group.flat.shape[0] // b * k_cache.shape[1]
    keys = padded if group.length is None else group.length
    # The gathered whole blocks [g * blocks, block_size, kv_heads, D] seen as [g, kv_heads,
    # keys, D] (cut to `keys`): one as_strided instead of view, slice and transpose.
    shape = (b, kv_heads, keys, dim)
    strides = (padded * kv_heads * dim, dim, kv_heads * dim, 1)
    k = k_cache.index_select(0, group.flat).as_strided(shape, strides)
    v = v_cache.index_select(0, group.flat).as_strided(shape, strides)
    if not group.fold:
        o = F.scaled_dot_product_attention(
            q[:, :, None, :], k, v, attn_mask=group.keep, scale=scale, enable_gqa=True
        )
        return o[:, :, 0, :]
    qg = q.view(b, kv_heads, heads // kv_heads, dim)  # GQA: the heads sharing a KV head
    o = F.scaled_dot_product_attention(qg, k, v, attn_mask=group.keep, scale=scale)
    return o.reshape(b, heads, dim)  # from [g, kv_heads, group, D]


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    plan: DecodePlan | None = None,
) -> torch.Tensor:
    """One query per sequence: q [batch, heads, head_dim]; a row with context 0 gives zeros.
    `plan`: build_plan of these tables and lengths, made once per step by the caller (else
    built here, for this call)."""
    if plan is None:
        plan = build_plan(block_tables, context_lens, k_cache.shape[1])
    if plan.all_rows:
        return _attend(q, k_cache, v_cache, plan.groups[0], scale)
    out = torch.zeros_like(q)
    for group in plan.groups:
        out[group.rows] = _attend(q[group.rows], k_cache, v_cache, group, scale)
    return out


# A chunk of at most this many new queries over a cached context (speculative verification,
# small chunked-prefill pieces) is attended with two batched matmuls under a causal mask:
# measured (SmolLM2 shape, 1 thread), SDPA with an explicit mask took 1.5-6x as long for 2
# to 33 queries over 64 to 4096 keys (5 x 256: 267 vs 93 us; 33 x 4096: 13.9 vs 6.3 ms).
SMALL_CHUNK_MAX = 32


def chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """q [n, heads, D], the last n of the ctx positions of k, v [kv_heads, ctx, D]: query
    j sees keys [0, ctx - n + j]. Returns [n, heads, D]."""
    n, heads, dim = q.shape
    kv_heads, ctx = k.shape[0], k.shape[1]
    group = heads // kv_heads
    qg = q.view(n, kv_heads, group, dim).permute(1, 0, 2, 3).reshape(kv_heads, n * group, dim)
    scores = torch.bmm(qg, k.transpose(1, 2)).mul_(scale)  # [kv_heads, n * group, ctx]
    last_key = torch.arange(ctx - n, ctx)
    future = torch.arange(ctx)[None, :] > last_key[:, None]  # [n, ctx]
    scores.view(kv_heads, n, group, ctx).masked_fill_(future[None, :, None, :], float("-inf"))
    out = torch.bmm(torch.softmax(scores, dim=-1), v)  # [kv_heads, n * group, D]
    return out.view(kv_heads, n, group, dim).permute(1, 0, 2, 3).reshape(n, heads, dim)
