"""Write new keys/values into the paged cache at their slots (block * block_size + offset)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._launch import pow2, require, require_same_device


@triton.jit
def _write_kv_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    stride_kt, stride_kh, stride_kd, stride_vt, stride_vh, stride_vd,
    stride_kc_b, stride_kc_t, stride_kc_h, stride_vc_b, stride_vc_t, stride_vc_h,
    HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    tok = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + tok).to(tl.int64)
    if slot < 0:  # padding token of a CUDA-graph batch: leave the cache alone
        return
    block = slot // BLOCK_SIZE
    offset = slot % BLOCK_SIZE
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    mask = (h < HEADS) & (d < HEAD_DIM)
    k = tl.load(k_ptr + tok * stride_kt + h * stride_kh + d * stride_kd, mask=mask)
    v = tl.load(v_ptr + tok * stride_vt + h * stride_vh + d * stride_vd, mask=mask)
    kc = k_cache_ptr + block * stride_kc_b + offset * stride_kc_t + h * stride_kc_h + d
    vc = v_cache_ptr + block * stride_vc_b + offset * stride_vc_t + h * stride_vc_h + d
    tl.store(kc, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(vc, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def write_kv_cache(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    plan: object | None = None,
) -> None:
    """k, v [T, kv_heads, D] -> caches [blocks, block_size, kv_heads, D] in place.

    A negative slot skips its token. Slots must be distinct (as the block manager gives them).
    `plan` is ignored: the kernel reads the slots on the device.
    """
    del plan
    require(k.dim() == 3 and v.shape == k.shape, f"k, v must be [tokens, kv_heads, head_dim] "
            f"and equal, got {tuple(k.shape)} and {tuple(v.shape)}")
    require(k_cache.dim() == 4 and v_cache.shape == k_cache.shape,
            "k_cache, v_cache must be [num_blocks, block_size, kv_heads, head_dim] and equal")
    require(tuple(k_cache.shape[2:]) == tuple(k.shape[1:]),
            f"cache heads/head_dim {tuple(k_cache.shape[2:])} differ from k's {tuple(k.shape[1:])}")
    require(k_cache.stride(3) == 1 and v_cache.stride(3) == 1, "cache rows must be contiguous")
    require(slot_mapping.shape == (k.shape[0],),
            f"slot_mapping must be [{k.shape[0]}], got {tuple(slot_mapping.shape)}")
    require_same_device(k, v, k_cache, v_cache, slot_mapping)
    tokens, heads, head_dim = k.shape
    if tokens == 0:
        return
    _write_kv_kernel[(tokens,)](
        k, v, k_cache, v_cache, slot_mapping,
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        HEADS=heads, HEAD_DIM=head_dim, BLOCK_SIZE=k_cache.shape[1],
        BLOCK_H=pow2(heads), BLOCK_D=pow2(head_dim), num_warps=4,
    )
