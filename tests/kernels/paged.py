"""Shared by the kernel tests: random paged caches, tolerances, a naive attention oracle."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Bounds per dtype (atol, rtol): fp32 tight; 16-bit inputs loose (one rounding of P and O).
TOLERANCE = {
    torch.float32: (2e-5, 2e-5),
    torch.float16: (3e-3, 3e-3),
    torch.bfloat16: (2e-2, 2e-2),
}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """No NaN survives and the error is within the bound of `expected`'s dtype."""
    assert not torch.isnan(actual).any(), "NaN in the output (a poisoned element was not written)"
    atol, rtol = TOLERANCE[expected.dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol)


def poisoned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=device())


@dataclass
class PagedCache:
    """A random paged K/V cache and the block tables of its sequences.

    `k_cache`/`v_cache` hold random values everywhere (what the reference reads);
    `k_poisoned`/`v_poisoned` are copies where every slot no sequence owns, including the
    tail of each last block, is NaN: a kernel that reads outside a block table (or past
    a context) turns its output NaN.
    """

    k_cache: torch.Tensor
    v_cache: torch.Tensor
    k_poisoned: torch.Tensor
    v_poisoned: torch.Tensor
    block_tables: torch.Tensor  # [seqs, max_blocks], blocks in shuffled order
    context_lens: torch.Tensor  # [seqs]


def make_paged_cache(
    context_lens: list[int], kv_heads: int, head_dim: int, block_size: int,
    dtype: torch.dtype, index_dtype: torch.dtype = torch.int32, spare_blocks: int = 3,
) -> PagedCache:
    dev = device()
    needed = [-(-n // block_size) for n in context_lens]
    num_blocks = sum(needed) + spare_blocks
    max_blocks = max(needed + [1]) + 1  # one padding column past the longest table
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k_cache = torch.randn(shape, device=dev).to(dtype)
    v_cache = torch.randn(shape, device=dev).to(dtype)
    order = torch.randperm(num_blocks).tolist()  # sequences own scattered, unordered blocks
    # Padding entries point at a spare (poisoned) block: they must never be followed.
    spare = order[-1]
    tables = torch.full((len(context_lens), max_blocks), spare, dtype=torch.int64)
    owned = torch.zeros(num_blocks * block_size, dtype=torch.bool)
    taken = 0
    for i, (n, nb) in enumerate(zip(context_lens, needed)):
        blocks = order[taken : taken + nb]
        taken += nb
        tables[i, :nb] = torch.tensor(blocks, dtype=torch.int64)
        for pos in range(n):
            owned[blocks[pos // block_size] * block_size + pos % block_size] = True
    mask = owned.view(num_blocks, block_size, 1, 1).to(dev)
    nan = torch.tensor(float("nan"), dtype=dtype, device=dev)
    return PagedCache(
        k_cache, v_cache, torch.where(mask, k_cache, nan), torch.where(mask, v_cache, nan),
        tables.to(dev, index_dtype), torch.tensor(context_lens, dtype=index_dtype, device=dev),
    )


def query_start_loc(query_lens: list[int]) -> torch.Tensor:
    starts = [0]
    for n in query_lens:
        starts.append(starts[-1] + n)
    return torch.tensor(starts, dtype=torch.int32, device=device())


def naive_attention(
    q: torch.Tensor, cache: PagedCache, query_lens: list[int], scale: float
) -> torch.Tensor:
    """Token by token in float64 from the definition: softmax(q.k * scale) over visible keys."""
    out = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    q_heads, kv_heads = q.shape[1], cache.k_cache.shape[2]
    block_size = cache.k_cache.shape[1]
    row = 0
    for i, q_len in enumerate(query_lens):
        ctx = int(cache.context_lens[i])
        pos = torch.arange(ctx, device=q.device)
        blocks = cache.block_tables[i].long()[pos // block_size]
        k = cache.k_cache[blocks, pos % block_size].double()  # [ctx, kv_heads, D]
        v = cache.v_cache[blocks, pos % block_size].double()
        k = k.repeat_interleave(q_heads // kv_heads, dim=1)
        v = v.repeat_interleave(q_heads // kv_heads, dim=1)
        for j in range(q_len):
            visible = ctx - q_len + j + 1
            scores = torch.einsum("hd,nhd->hn", q[row].double(), k[:visible]) * scale
            out[row] = torch.einsum("hn,nhd->hd", scores.softmax(-1), v[:visible])
            row += 1
    return out
