"""RMSNorm and fused residual-add + RMSNorm: one program per token row, fp32 statistics."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._launch import out_or_new, pow2, require, require_same_device


@triton.jit
def _rms_norm_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, new_res_ptr, eps,
    stride_x, stride_res, stride_out, stride_new_res,
    HIDDEN: tl.constexpr, BLOCK_H: tl.constexpr, ADD_RESIDUAL: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_H)
    mask = cols < HIDDEN
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if ADD_RESIDUAL:
        r = tl.load(res_ptr + row * stride_res + cols, mask=mask, other=0.0)
        # Round the sum to the stream's dtype first: the residual carried on is that value.
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(new_res_ptr + row * stride_new_res + cols, x, mask=mask)
    xf = x.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(xf * xf, axis=0) / HIDDEN + eps)
    # As HF Llama: normalise in fp32, cast to the input dtype, then scale by the weight.
    normed = (xf * inv_rms).to(x.dtype).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = (normed * w).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + row * stride_out + cols, y, mask=mask)


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    require(x.dim() == 2, f"x must be [tokens, hidden], got shape {tuple(x.shape)}")
    require(weight.shape == (x.shape[1],),
            f"weight must be [{x.shape[1]}], got {tuple(weight.shape)}")
    require(x.stride(1) == 1, "x rows must be contiguous")
    require_same_device(x, weight)


def _warps(block_h: int) -> int:
    return 8 if block_h >= 4096 else 4


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x [T, H] -> rms_norm(x) * weight in x's dtype."""
    _check(x, weight)
    out = out_or_new(out, tuple(x.shape), x)
    if x.shape[0] == 0:
        return out
    block_h = pow2(x.shape[1])
    _rms_norm_kernel[(x.shape[0],)](
        x, x, weight, out, out, eps, x.stride(0), x.stride(0), out.stride(0), out.stride(0),
        HIDDEN=x.shape[1], BLOCK_H=block_h, ADD_RESIDUAL=False, num_warps=_warps(block_h),
    )
    return out


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual) * weight, x + residual), reading each input once."""
    _check(x, weight)
    require(residual.shape == x.shape and residual.dtype == x.dtype,
            f"residual must match x ({tuple(x.shape)}, {x.dtype}), got "
            f"{tuple(residual.shape)}, {residual.dtype}")
    require(residual.stride(1) == 1, "residual rows must be contiguous")
    require_same_device(x, residual)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    new_residual = torch.empty_like(out)
    if x.shape[0] == 0:
        return out, new_residual
    block_h = pow2(x.shape[1])
    _rms_norm_kernel[(x.shape[0],)](
        x, residual, weight, out, new_residual, eps,
        x.stride(0), residual.stride(0), out.stride(0), new_residual.stride(0),
        HIDDEN=x.shape[1], BLOCK_H=block_h, ADD_RESIDUAL=True, num_warps=_warps(block_h),
    )
    return out, new_residual
