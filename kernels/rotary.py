"""Rotary position embedding, NeoX / HF rotate-half layout, positions gathered per token."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._launch import out_or_new, pow2, require, require_same_device


@triton.jit
def _rotary_kernel(
    pos_ptr, x_ptr, inv_freq_ptr, out_ptr,
    stride_xt, stride_xh, stride_xd, stride_ot, stride_oh,
    HEADS: tl.constexpr, HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    tok = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_HALF)
    d_mask = d < HALF
    mask = (h < HEADS)[:, None] & d_mask[None, :]
    # Angles in fp32 from the token's own position (any order, chunked prefill included).
    pos = tl.load(pos_ptr + tok).to(tl.float32)
    freqs = pos * tl.load(inv_freq_ptr + d, mask=d_mask, other=0.0).to(tl.float32)
    cos = tl.cos(freqs)[None, :]
    sin = tl.sin(freqs)[None, :]
    x_row = x_ptr + tok * stride_xt + h[:, None] * stride_xh
    x1 = tl.load(x_row + d[None, :] * stride_xd, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_row + (d[None, :] + HALF) * stride_xd, mask=mask, other=0.0).to(tl.float32)
    o_row = out_ptr + tok * stride_ot + h[:, None] * stride_oh + d[None, :]
    dtype = out_ptr.dtype.element_ty
    tl.store(o_row, (x1 * cos - x2 * sin).to(dtype), mask=mask)
    tl.store(o_row + HALF, (x2 * cos + x1 * sin).to(dtype), mask=mask)


def rotary_embedding(
    positions: torch.Tensor,
    x: torch.Tensor,
    inv_freq: torch.Tensor,
    out: torch.Tensor | None = None,
    plan: object | None = None,
) -> torch.Tensor:
    """x [T, heads, D] rotated by positions [T] with inv_freq [D/2] -> new [T, heads, D].
    `plan` is ignored: the kernel computes its angles on the device."""
    del plan
    require(x.dim() == 3, f"x must be [tokens, heads, head_dim], got shape {tuple(x.shape)}")
    tokens, heads, head_dim = x.shape
    require(head_dim % 2 == 0, f"head_dim must be even, got {head_dim}")
    require(positions.shape == (tokens,),
            f"positions must be [{tokens}], got {tuple(positions.shape)}")
    require(inv_freq.shape == (head_dim // 2,),
            f"inv_freq must be [{head_dim // 2}], got {tuple(inv_freq.shape)}")
    require_same_device(positions, x, inv_freq)
    out = out_or_new(out, (tokens, heads, head_dim), x)
    if tokens == 0 or heads == 0:
        return out
    block_half = pow2(head_dim // 2)
    block_h = max(1, min(pow2(heads), 2048 // block_half))  # ~2k elements per program
    grid = (tokens, triton.cdiv(heads, block_h))
    _rotary_kernel[grid](
        positions, x, inv_freq, out,
        x.stride(0), x.stride(1), x.stride(2), out.stride(0), out.stride(1),
        HEADS=heads, HALF=head_dim // 2, BLOCK_H=block_h, BLOCK_HALF=block_half, num_warps=4,
    )
    return out
