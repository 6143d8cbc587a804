"""FP8 W8A8 GEMM: the Triton launchers vs the torch reference (which quantizes identically, so
the bound is tight) and vs the full-precision matmul (an fp8-sized bound). Shapes are not
multiples of the block sizes; M <= 16 and M <= 64 take split-K tiers, larger M the plain
tiled one (each tier has its own fixed config under the interpreter)."""

from __future__ import annotations

import random

import pytest
import torch

from kernels import fp8_matmul, fp8_quant
from kernels import reference as ref

# Accumulation order differs, so fp32 outputs agree to a few fp32 ulps (relative to the
# largest output). bf16 outputs may round to the neighbouring bf16 value (the interpreter
# truncates instead of rounding), so one bf16 ulp.
TIGHT = {torch.float32: 1e-5, torch.bfloat16: 2**-7}
FP8_NORM_BOUND = 0.08  # normwise error of fp8 x fp8 against the exact product (~0.03 typical)


def rel_max(y: torch.Tensor, y_ref: torch.Tensor) -> float:
    return ((y.float() - y_ref.float()).abs().max() / y_ref.float().abs().max()).item()


def rel_norm(y: torch.Tensor, y_ref: torch.Tensor) -> float:
    return (torch.linalg.norm(y.float() - y_ref.float()) / torch.linalg.norm(y_ref.float())).item()


def weight(n: int, k: int, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(full-precision w, fp8 w, scale) for 'tensor', 'channel' or 'block' scaling."""
    w = torch.randn(n, k) * torch.logspace(-1, 1, n)[torch.randperm(n)][:, None] * 0.05
    if kind == "tensor":
        scale = (w.abs().max() / 448.0).reshape(1)
        return w, (w / scale).to(torch.float8_e4m3fn), scale
    wq, scale = ref.quantize_fp8_weight(w, 128 if kind == "block" else None)
    return w, wq, scale


# (M, kind, x dtype, bias, static input scale): each factor on both paths at least once.
CASES = [
    (1, "channel", torch.bfloat16, True, False),
    (3, "tensor", torch.float32, False, False),
    (16, "block", torch.bfloat16, False, False),
    (5, "block", torch.float32, True, False),
    (2, "tensor", torch.bfloat16, True, True),
    (17, "channel", torch.float32, False, False),
    (33, "tensor", torch.bfloat16, True, False),
    (20, "block", torch.bfloat16, False, True),
    (70, "block", torch.float32, True, False),
    (80, "channel", torch.bfloat16, True, True),
    (65, "tensor", torch.float32, False, False),
]


@pytest.mark.parametrize(("m", "kind", "dtype", "has_bias", "static"), CASES)
def test_fp8_linear_matches_reference(
    m: int, kind: str, dtype: torch.dtype, has_bias: bool, static: bool
) -> None:
    n, k = random.randint(40, 200), random.randint(72, 300)
    if kind == "block":  # always several 128-wide blocks both ways, the last ones partial
        n, k = random.randint(129, 255), random.randint(257, 383)
    x = (torch.randn(m, k) * torch.logspace(-2, 2, m)[:, None]).to(dtype)
    w, wq, w_scale = weight(n, k, kind)
    bias = torch.randn(n).to(dtype) if has_bias else None
    input_scale = (x.float().abs().max() / 448.0).reshape(()) if static else None

    y = fp8_matmul.fp8_linear(x, wq, w_scale, bias, input_scale)
    y_ref = ref.fp8_linear(x, wq, w_scale, bias, input_scale)
    assert y.dtype == dtype and y.shape == (m, n)
    assert rel_max(y, y_ref) <= TIGHT[dtype]
    exact = x.float() @ w.t() + (bias.float() if has_bias else 0.0)
    assert rel_norm(y, exact) <= FP8_NORM_BOUND


@pytest.mark.parametrize(("m", "kind"), [(4, "channel"), (24, "block"), (70, "channel")])
def test_whole_k_tiles_take_the_unmasked_loads(m: int, kind: str) -> None:
    """K = 384 splits into whole tiles for the interpreter's configs (BLOCK_K 32, split-K
    1, 2 or 3)."""
    n, k = random.randint(129, 200), 384
    x = torch.randn(m, k, dtype=torch.bfloat16)
    _, wq, w_scale = weight(n, k, kind)
    y = fp8_matmul.fp8_linear(x, wq, w_scale)
    assert rel_max(y, ref.fp8_linear(x, wq, w_scale)) <= TIGHT[torch.bfloat16]


@pytest.mark.skipif(not fp8_matmul._INTERPRET, reason="the fixed interpreter config only")
@pytest.mark.parametrize("split", [1, 2])
def test_skinny_path_with_other_splits(monkeypatch: pytest.MonkeyPatch, split: int) -> None:
    """One split writes the output directly; more go through the fp32 partials and the sum."""
    monkeypatch.setitem(fp8_matmul._INTERPRET_SKINNY, "SPLIT_K", split)  # at most the 3 of ws
    m, n, k = 5, random.randint(129, 200), random.randint(72, 300)
    x = torch.randn(m, k, dtype=torch.bfloat16)
    _, wq, w_scale = weight(n, k, "block")
    bias = torch.randn(n, dtype=torch.bfloat16)
    y = fp8_matmul.fp8_linear(x, wq, w_scale, bias)
    assert rel_max(y, ref.fp8_linear(x, wq, w_scale, bias)) <= TIGHT[torch.bfloat16]


@pytest.mark.parametrize(("m", "out_dtype"), [(4, torch.bfloat16), (19, torch.float32),
                                              (70, torch.float32), (70, torch.bfloat16)])
def test_fp8_gemm_fills_poisoned_out(m: int, out_dtype: torch.dtype) -> None:
    n, k = random.randint(40, 200), random.randint(72, 300)
    x = torch.randn(m, k)
    _, wq, w_scale = weight(n, k, "channel")
    a, a_scale = fp8_quant.quantize_fp8_per_token(x)
    out = torch.full((m, n), float("nan"), dtype=out_dtype)
    y = fp8_matmul.fp8_gemm(a, a_scale, wq, w_scale, out_dtype=out_dtype, out=out)
    assert y.data_ptr() == out.data_ptr()
    y_ref = ((a.float() * a_scale[:, None]) @ (wq.float() * w_scale[:, None]).t()).to(out_dtype)
    assert not out.isnan().any()
    assert rel_max(out, y_ref) <= TIGHT[out_dtype]


def test_zero_activation_rows_give_bias_only() -> None:
    m, n, k = 6, random.randint(40, 200), random.randint(72, 300)
    x = torch.randn(m, k)
    x[2] = 0.0
    _, wq, w_scale = weight(n, k, "block")
    bias = torch.randn(n)
    y = fp8_matmul.fp8_linear(x, wq, w_scale, bias)
    assert torch.equal(y[2], bias)


def test_bad_arguments_raise() -> None:
    x = torch.randn(3, 72)
    _, wq, w_scale = weight(40, 72, "channel")
    with pytest.raises(ValueError, match="chain"):
        fp8_matmul.fp8_linear(x[:, :64], wq, w_scale)
    with pytest.raises(ValueError, match="weight_scale"):
        fp8_matmul.fp8_linear(x, wq, w_scale[:7])
    with pytest.raises(ValueError, match="block weight_scale"):
        fp8_matmul.fp8_linear(x, wq, torch.ones(2, 2))
    with pytest.raises(ValueError, match="fp8"):
        fp8_matmul.fp8_gemm(x, torch.ones(3), wq, w_scale)
    with pytest.raises(ValueError, match="a_scale"):
        fp8_matmul.fp8_gemm(wq[:3], torch.ones(3, dtype=torch.float16), wq, w_scale)
    with pytest.raises(ValueError, match="bias"):
        fp8_matmul.fp8_linear(x, wq, w_scale, torch.zeros(41))
    with pytest.raises(ValueError, match="per tensor"):
        fp8_matmul.fp8_linear(x, wq, w_scale, input_scale=torch.ones(3))


def test_backends_expose_the_same_fp8_ops() -> None:
    import kernels

    m, n, k = 3, random.randint(40, 200), random.randint(72, 300)
    x = torch.randn(m, k, dtype=torch.bfloat16)
    w = torch.randn(n, k)
    results = []
    for ops in (kernels.reference_ops, kernels.triton_ops):
        wq, w_scale = ops.quantize_fp8_weight(w)
        results.append(ops.fp8_linear(x, wq, w_scale))
    assert kernels.triton_ops.fp8_linear is fp8_matmul.fp8_linear
    assert rel_max(results[1], results[0]) <= TIGHT[torch.bfloat16]
