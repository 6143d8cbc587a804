"""SiLU-and-mul (SwiGLU): out = silu(gate) * up for gate_up = [gate | up]."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._launch import out_or_new, pow2, require


@triton.jit
def _silu_and_mul_kernel(
    x_ptr, out_ptr, stride_x, stride_out, INTER: tl.constexpr, BLOCK: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < INTER
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * stride_x + INTER + cols, mask=mask, other=0.0).to(tl.float32)
    g = gate.to(tl.float32)
    # silu rounded to the input dtype before the product, as the torch reference does.
    act = (g / (1.0 + tl.exp(-g))).to(gate.dtype).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, (act * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(gate_up: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """gate_up [T, 2I] -> [T, I]."""
    require(gate_up.dim() == 2 and gate_up.shape[1] % 2 == 0,
            f"gate_up must be [tokens, 2 * intermediate], got shape {tuple(gate_up.shape)}")
    require(gate_up.stride(1) == 1, "gate_up rows must be contiguous")
    tokens, inter = gate_up.shape[0], gate_up.shape[1] // 2
    out = out_or_new(out, (tokens, inter), gate_up)
    if tokens == 0 or inter == 0:
        return out
    block = min(pow2(inter), 1024)
    grid = (tokens, triton.cdiv(inter, block))
    _silu_and_mul_kernel[grid](
        gate_up, out, gate_up.stride(0), out.stride(0), INTER=inter, BLOCK=block, num_warps=4
    )
    return out
