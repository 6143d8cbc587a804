"""FP8 activation/weight quantization: Triton kernels vs the torch reference, and the
reference against the e4m3 error bound. Runs under TRITON_INTERPRET=1 on the CPU."""

from __future__ import annotations

import random

import pytest
import torch

from kernels import fp8_quant
from kernels import reference as ref

FP8 = torch.float8_e4m3fn
FP8_NAN = 0x7F  # e4m3fn NaN bit pattern: poisons fp8 output buffers


def poisoned(m: int, k: int, scale_cols: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.full((m, k), FP8_NAN, dtype=torch.uint8).view(FP8)
    s = torch.full((m,) if scale_cols is None else (m, scale_cols), float("nan"))
    return q, s


def activations(m: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows of very different magnitudes, an all-zero row and exact zeros inside rows."""
    x = torch.randn(m, k) * torch.logspace(-6, 4, m)[torch.randperm(m)][:, None]
    x[torch.rand(m, k) < 0.05] = 0.0
    x[m // 2] = 0.0
    return x.to(dtype)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 3, 17, 33])
def test_per_token_matches_reference(m: int, dtype: torch.dtype) -> None:
    k = random.randint(72, 300)
    x = activations(m, k, dtype)
    q, s = poisoned(m, k)
    fp8_quant.quantize_fp8_per_token(x, out=q, scale_out=s)
    q_ref, s_ref = ref.quantize_fp8_per_token(x)
    assert torch.equal(s, s_ref)
    assert same_bits(q, q_ref)


def test_per_token_static_scale_matches_reference() -> None:
    m, k = 17, random.randint(72, 300)
    x = activations(m, k, torch.bfloat16)
    scale = torch.tensor(x.float().abs().max().item() / 1000.0)  # the largest saturate at 448
    q, s = poisoned(m, k)
    fp8_quant.quantize_fp8_per_token(x, scale, out=q, scale_out=s)
    q_ref, s_ref = ref.quantize_fp8_per_token(x, scale)
    assert torch.all(s == scale) and torch.equal(s, s_ref)
    assert same_bits(q, q_ref)
    assert q.float().abs().max() == 448.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 17])
def test_per_group_matches_reference(m: int, dtype: torch.dtype) -> None:
    k = random.randint(72, 700)  # several groups, the last one partial
    x = activations(m, k, dtype)
    x[:, :128] *= 1e3  # groups of one row with very different ranges
    q, s = poisoned(m, k, -(-k // 128))
    fp8_quant.quantize_fp8_per_group(x, 128, out=q, scale_out=s)
    q_ref, s_ref = ref.quantize_fp8_per_group(x, 128)
    assert torch.equal(s, s_ref)
    assert same_bits(q, q_ref)


def test_rounding_of_every_value_and_tie() -> None:
    """Every finite e4m3 value, the midpoints between neighbours (ties go to even) and points
    just off them, beyond-range values (saturate): the kernel agrees with torch's cast."""
    grid = torch.arange(256, dtype=torch.uint8).view(FP8).float()
    grid = grid[grid.isfinite() & (grid >= 0)].unique()
    mids = (grid[1:] + grid[:-1]) / 2
    pos = torch.cat([grid, mids, mids * (1 + 2**-12), mids * (1 - 2**-12), torch.tensor([460.0, 1e6])])
    x = torch.cat([pos, -pos])[None, :]
    q, _ = fp8_quant.quantize_fp8_per_token(x, torch.tensor(1.0))
    assert same_bits(q, ref.quantize_fp8_per_token(x, torch.tensor(1.0))[0])
    assert q.float().abs().max() == 448.0


@pytest.mark.parametrize("group", [None, 128])
def test_reference_activation_error_bound(group: int | None) -> None:
    """e4m3 keeps 3 mantissa bits: relative error <= 2**-4, plus half the subnormal step."""
    m, k = 5, random.randint(72, 300)
    x = activations(m, k, torch.float32)
    if group is None:
        q, s = ref.quantize_fp8_per_token(x)
        s_full = s[:, None]
    else:
        q, s = ref.quantize_fp8_per_group(x, group)
        s_full = s.repeat_interleave(group, 1)[:, :k]
    err = (q.float() * s_full - x).abs()
    assert torch.all(err <= 2**-4 * x.abs() + s_full * 2**-10)
    assert torch.all(q[m // 2].float() == 0)  # the zero row: no NaN from a zero scale


@pytest.mark.parametrize("block", [None, 128])
def test_weight_quantization_bound_and_shapes(block: int | None) -> None:
    n, k = random.randint(40, 300), random.randint(72, 300)
    w = torch.randn(n, k) * torch.logspace(-3, 2, n)[:, None]
    w[3] = 0.0
    q, s = ref.quantize_fp8_weight(w, block)
    assert q.dtype == FP8 and q.shape == (n, k)
    expect = (n,) if block is None else (-(-n // block), -(-k // block))
    assert s.shape == expect and s.dtype == torch.float32
    deq = ref.dequantize_fp8_weight(q, s)
    s_full = ref.dequantize_fp8_weight(torch.ones(n, k).to(FP8), s)
    assert torch.all((deq - w).abs() <= 2**-4 * w.abs() + s_full * 2**-10)
    assert torch.all(q.float().abs().amax(dim=1)[w.abs().amax(dim=1) > 0] <= 448)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="2-D"):
        fp8_quant.quantize_fp8_per_token(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="power of two"):
        fp8_quant.quantize_fp8_per_group(torch.randn(2, 96), 96)
    with pytest.raises(ValueError, match="2-D"):
        ref.quantize_fp8_weight(torch.randn(4))
