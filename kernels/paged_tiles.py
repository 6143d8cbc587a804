"""Pieces shared by the paged attention kernels (decode and prefill): the cache-tile gather,
the dot that survives the interpreter, input checks and per-dtype tile sizes."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._launch import require, require_same_device

LOG2E = 1.4426950408889634


@triton.jit
def attn_dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """tl.dot, or through fp32 where the interpreter would multiply bf16 bit patterns
    (triton-lang/triton#11584); the operands are already rounded to their dtype, so the
    products are the GPU's."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def cache_slots(table, n, n_mask, BLOCK_SIZE: tl.constexpr):
    """(block, offset in block) of context positions n, through one sequence's block table."""
    block = tl.load(table + n // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
    return block, n % BLOCK_SIZE


@triton.jit
def load_cache_tile(ptr, block, offset, head, d, mask, stride_b, stride_t, stride_h):
    """A [positions, head_dim] tile of one KV head, gathered from the paged cache."""
    return tl.load(ptr + block[:, None] * stride_b + offset[:, None] * stride_t
                   + head * stride_h + d[None, :], mask=mask, other=0.0)


def check_paged_inputs(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                       block_tables: torch.Tensor) -> None:
    """Shape/layout checks shared by the decode and prefill launchers."""
    require(q.dim() == 3, f"q must be [tokens, heads, head_dim], got shape {tuple(q.shape)}")
    require(k_cache.dim() == 4 and v_cache.shape == k_cache.shape,
            "k_cache, v_cache must be [num_blocks, block_size, kv_heads, head_dim] and equal")
    require(k_cache.shape[3] == q.shape[2],
            f"head_dim differs: q has {q.shape[2]}, the cache {k_cache.shape[3]}")
    require(q.shape[1] % k_cache.shape[2] == 0,
            f"query heads ({q.shape[1]}) must be a multiple of kv heads ({k_cache.shape[2]})")
    require(q.stride(2) == 1 and k_cache.stride(3) == 1 and v_cache.stride(3) == 1,
            "q and the caches must be contiguous along head_dim")
    require(k_cache.dtype == v_cache.dtype == q.dtype,
            f"q, k_cache, v_cache dtypes differ: {q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    require(block_tables.dim() == 2 and block_tables.stride(1) == 1,
            "block_tables must be a row-contiguous [seqs, max_blocks] tensor")
    require_same_device(q, k_cache, v_cache, block_tables)


def dot_precision(dtype: torch.dtype) -> str:
    """Exact fp32 dots for fp32 inputs (tf32 would break the fp32 bound); 16-bit ones are exact."""
    return "ieee" if dtype == torch.float32 else "tf32"


def interpreter_upcast(q: torch.Tensor) -> bool:
    """On the CPU kernels run interpreted, where bf16 dots need the fp32 detour."""
    return not q.is_cuda and q.dtype == torch.bfloat16


def gpu_tiles(q: torch.Tensor) -> tuple[int, int]:
    """(keys per tile, decode pipeline stages) on a GPU: fp32 tiles are twice the bytes, so
    halve them to keep the staged K/V buffers within shared memory.

    The block-table load that addresses each K/V tile takes pipeline stages of its own: at 3
    stages the compiled decode kernel held one K/V buffer (no double buffering), and the fp32
    one at 2 stages spilled 288 B/thread on sm_90; 5 is the first depth with two K/V buffers
    (72-76 KB of shared memory, within sm_89's 99 KB). Seen in benchmarks.kernel_report."""
    return (32, 5) if q.dtype == torch.float32 else (64, 5)
