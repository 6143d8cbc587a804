"""Triton kernels that quantize activations to float8_e4m3fn: per token or per 1x128 group.

Numerics match kernels/reference.py bit for bit: scale = max(amax / 448, 1e-12), q = x / scale
in fp32, saturated to +-448, rounded to nearest even.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
FP8_MIN_SCALE = 1e-12


@triton.jit
def round_to_fp8(x):
    """Saturate fp32 x to +-448 and round it to the nearest e4m3 value (ties to even), as fp8.

    The rounding is done in fp32 so that the final cast is exact: Triton's interpreter rounds
    fp8 casts wrongly (no carry into the exponent, ties away), and on the GPU this costs a few
    ALU ops in a memory-bound kernel.
    """
    bits = x.to(tl.int32, bitcast=True)
    a = tl.minimum(tl.abs(x), 448.0)
    exp = ((a.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    exp = tl.maximum(exp, -6)  # below 2**-6 e4m3 is subnormal: a fixed step of 2**-9
    # step = 2**(exp - 3) (3 mantissa bits); multiplying by its inverse, a power of 2, is exact.
    inv_step = ((127 + 3 - exp) << 23).to(tl.float32, bitcast=True)
    step = ((127 - 3 + exp) << 23).to(tl.float32, bitcast=True)
    magic = 12582912.0  # 1.5 * 2**23: adding and subtracting it rounds |v| < 2**22 to an integer
    rounded = ((a * inv_step + magic) - magic) * step
    # x's sign back from its sign bit, so that -0.0 and tiny negatives give -0.0 as torch does.
    return tl.where(bits < 0, -rounded, rounded).to(tl.float8e4nv)


@triton.jit
def _per_token_quant_kernel(
    x_ptr, q_ptr, s_ptr, static_s_ptr, K,
    stride_xm, stride_qm,
    STATIC: tl.constexpr, BLOCK: tl.constexpr,
):
    """One program per row: amax over the row (skipped with a static scale), then quantize."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    offs = tl.arange(0, BLOCK)
    if STATIC:
        scale = tl.load(static_s_ptr).to(tl.float32)
    else:
        amax = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, K, BLOCK):
            x = tl.load(x_row + start + offs, mask=start + offs < K, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(x))
        scale = tl.maximum(tl.max(amax, axis=0) / 448.0, 1e-12)
    tl.store(s_ptr + row, scale)
    for start in range(0, K, BLOCK):
        mask = start + offs < K
        x = tl.load(x_row + start + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(q_ptr + row * stride_qm + start + offs, round_to_fp8(x / scale), mask=mask)


@triton.jit
def _per_group_quant_kernel(
    x_ptr, q_ptr, s_ptr, K, num_groups,
    stride_xm, stride_qm, stride_sm,
    GROUP: tl.constexpr, GROUPS_PER_PROGRAM: tl.constexpr,
):
    """Program (row, j) quantizes GROUPS_PER_PROGRAM consecutive 1 x GROUP groups of one row."""
    row = tl.program_id(0).to(tl.int64)
    groups = tl.program_id(1) * GROUPS_PER_PROGRAM + tl.arange(0, GROUPS_PER_PROGRAM)
    cols = groups[:, None] * GROUP + tl.arange(0, GROUP)[None, :]
    mask = cols < K
    x = tl.load(x_ptr + row * stride_xm + cols, mask=mask, other=0.0).to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(x), axis=1) / 448.0, 1e-12)
    tl.store(s_ptr + row * stride_sm + groups, scale, mask=groups < num_groups)
    tl.store(q_ptr + row * stride_qm + cols, round_to_fp8(x / scale[:, None]), mask=mask)


def _check_activation(x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"expected a 2-D activation [M, K], got shape {tuple(x.shape)}")
    if x.stride(1) != 1:
        raise ValueError("the activation's last dimension must be contiguous")


def _check_out(out: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    if out is not None and (tuple(out.shape) != shape or out.dtype != dtype or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous {dtype} tensor of shape {shape}")


def quantize_fp8_per_token(
    x: torch.Tensor,
    input_scale: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x[M, K] -> (fp8 [M, K], fp32 scale [M]): dynamic per-row scales, or the static one."""
    _check_activation(x)
    m, k = x.shape
    _check_out(out, (m, k), FP8_DTYPE)
    _check_out(scale_out, (m,), torch.float32)
    q = torch.empty((m, k), dtype=FP8_DTYPE, device=x.device) if out is None else out
    s = torch.empty((m,), dtype=torch.float32, device=x.device) if scale_out is None else scale_out
    if m == 0:
        return q, s
    static = input_scale is not None
    static_s = input_scale.reshape(1).float() if static else s  # unused when not static
    block = min(triton.next_power_of_2(k), 2048)
    _per_token_quant_kernel[(m,)](
        x, q, s, static_s, k, x.stride(0), q.stride(0), STATIC=static, BLOCK=block
    )
    return q, s


def quantize_fp8_per_group(
    x: torch.Tensor,
    group_size: int = 128,
    out: torch.Tensor | None = None,
    scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x[M, K] -> (fp8 [M, K], fp32 scale [M, ceil(K / group_size)]), one scale per 1 x group."""
    _check_activation(x)
    if group_size <= 0 or group_size & (group_size - 1):
        raise ValueError(f"group_size must be a power of two, got {group_size}")
    m, k = x.shape
    num_groups = triton.cdiv(k, group_size)
    _check_out(out, (m, k), FP8_DTYPE)
    _check_out(scale_out, (m, num_groups), torch.float32)
    q = torch.empty((m, k), dtype=FP8_DTYPE, device=x.device) if out is None else out
    s = (torch.empty((m, num_groups), dtype=torch.float32, device=x.device)
         if scale_out is None else scale_out)
    if m == 0:
        return q, s
    per_program = min(triton.next_power_of_2(num_groups), max(1, 1024 // group_size))
    grid = (m, triton.cdiv(num_groups, per_program))
    _per_group_quant_kernel[grid](
        x, q, s, k, num_groups, x.stride(0), q.stride(0), s.stride(0),
        GROUP=group_size, GROUPS_PER_PROGRAM=per_program,
    )
    return q, s
