"""RMSNorm, fused add + RMSNorm, SiLU-and-mul and rotary (Triton) against the torch references."""

from __future__ import annotations

import pytest
import torch

from kernels import reference_ops, triton_ops
from tests.kernels.paged import assert_close, device, poisoned

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _randn(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(*shape, device=device()).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [40, 129])
def test_rms_norm(dtype, hidden):
    x, w = _randn(7, hidden, dtype=dtype), _randn(hidden, dtype=dtype)
    out = poisoned((7, hidden), dtype)
    got = triton_ops.rms_norm(x, w, 1e-5, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert_close(got, reference_ops.rms_norm(x, w, 1e-5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_rms_norm(dtype):
    x, res, w = _randn(9, 72, dtype=dtype), _randn(9, 72, dtype=dtype), _randn(72, dtype=dtype)
    x_before, res_before = x.clone(), res.clone()
    normed, new_res = triton_ops.fused_add_rms_norm(x, res, w, 1e-6)
    ref_normed, ref_res = reference_ops.fused_add_rms_norm(x, res, w, 1e-6)
    # One rounding of the same fp32 sum: bit-equal, except that the interpreter rounds
    # fp32 -> bf16 toward zero where the GPU and torch round to nearest.
    if dtype != torch.bfloat16 or device().type == "cuda":
        assert torch.equal(new_res, ref_res)
    assert_close(new_res, ref_res)
    assert_close(normed, ref_normed)
    assert torch.equal(x, x_before) and torch.equal(res, res_before)  # out of place


def test_rms_norm_on_strided_rows():
    base = _randn(5, 96, dtype=torch.float32)
    x, w = base[:, :64], _randn(64, dtype=torch.float32)  # rows 96 apart
    assert_close(triton_ops.rms_norm(x, w, 1e-5), reference_ops.rms_norm(x, w, 1e-5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inter", [37, 1100])  # 1100: more than one column tile
def test_silu_and_mul(dtype, inter):
    gate_up = _randn(5, 2 * inter, dtype=dtype)
    out = poisoned((5, inter), dtype)
    got = triton_ops.silu_and_mul(gate_up, out=out)
    assert_close(got, reference_ops.silu_and_mul(gate_up))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,head_dim", [(3, 64), (5, 48), (2, 12)])
def test_rotary_embedding(dtype, heads, head_dim):
    tokens = 11
    positions = torch.randint(0, 4000, (tokens,), device=device())  # unsorted, as batches are
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=device()) / head_dim))
    # x as a strided view into a fused qkv projection, the way the model produces it
    qkv = _randn(tokens, (heads + 2) * head_dim, dtype=dtype)
    x = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    out = poisoned((tokens, heads, head_dim), dtype)
    got = triton_ops.rotary_embedding(positions, x, inv_freq, out=out)
    expected = reference_ops.rotary_embedding(positions, x, inv_freq)
    if dtype == torch.float32:
        assert_close(got, expected)
    else:  # the reference rounds cos/sin and each product to 16 bits; the kernel once at the end
        exact = reference_ops.rotary_embedding(positions, x.float(), inv_freq)
        assert_close(got, exact.to(dtype))
        assert_close(got, expected)


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="weight"):
        triton_ops.rms_norm(_randn(3, 8, dtype=torch.float32), _randn(7, dtype=torch.float32), 1e-5)
    with pytest.raises(ValueError, match="gate_up"):
        triton_ops.silu_and_mul(_randn(3, 7, dtype=torch.float32))
    with pytest.raises(ValueError, match="inv_freq"):
        triton_ops.rotary_embedding(
            torch.zeros(2, dtype=torch.int64, device=device()),
            _randn(2, 1, 8, dtype=torch.float32), _randn(3, dtype=torch.float32),
        )
    with pytest.raises(ValueError, match="out has shape"):
        triton_ops.rms_norm(
            _randn(3, 8, dtype=torch.float32), _randn(8, dtype=torch.float32), 1e-5,
            out=poisoned((3, 9), torch.float32),
        )
