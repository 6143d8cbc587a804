"""FP8 kernels on a GPU at Llama-3.1-8B projection shapes: against the torch reference (run on
the same GPU) and against torch._scaled_mm on the same quantized inputs. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from kernels import fp8_matmul, fp8_quant
from kernels import reference as ref

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

# name -> (N, K) of y = x @ W.T
LLAMA_8B = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096),
            "down": (4096, 14336)}
# Same quantized inputs, different accumulation order (and Hopper's fp8 MMA accumulates with
# a reduced mantissa); bf16 output rounding dominates.
GPU_BOUND = 1e-2


def rel_max(y: torch.Tensor, y_ref: torch.Tensor) -> float:
    return ((y.float() - y_ref.float()).abs().max() / y_ref.float().abs().max()).item()


def inputs(m: int, n: int, k: int, block: int | None) -> tuple[torch.Tensor, ...]:
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda") * 0.02
    wq, scale = ref.quantize_fp8_weight(w, block)
    return x, wq, scale, torch.randn(n, device="cuda", dtype=torch.bfloat16)


@pytest.mark.parametrize("m", [1, 7, 16, 64, 1000, 4096])
@pytest.mark.parametrize("name", sorted(LLAMA_8B))
def test_per_channel_matches_reference_and_scaled_mm(name: str, m: int) -> None:
    n, k = LLAMA_8B[name]
    x, wq, w_scale, bias = inputs(m, n, k, None)
    y = fp8_matmul.fp8_linear(x, wq, w_scale, bias)
    assert y.dtype == torch.bfloat16 and not y.isnan().any()
    assert rel_max(y, ref.fp8_linear(x, wq, w_scale, bias)) <= GPU_BOUND

    a, a_scale = fp8_quant.quantize_fp8_per_token(x)
    y_lib = torch._scaled_mm(a, wq.t(), scale_a=a_scale[:, None], scale_b=w_scale[None, :],
                             out_dtype=torch.bfloat16)
    y_ours = fp8_matmul.fp8_gemm(a, a_scale, wq, w_scale, out_dtype=torch.bfloat16)
    assert rel_max(y_ours, y_lib) <= GPU_BOUND


@pytest.mark.parametrize("m", [1, 16, 200, 2048])
@pytest.mark.parametrize("name", ["gate_up", "down"])
def test_block_scaled_matches_reference(name: str, m: int) -> None:
    n, k = LLAMA_8B[name]
    x, wq, w_scale, bias = inputs(m, n, k, 128)
    y = fp8_matmul.fp8_linear(x, wq, w_scale, bias)
    assert rel_max(y, ref.fp8_linear(x, wq, w_scale, bias)) <= GPU_BOUND


def test_static_input_scale_matches_reference() -> None:
    n, k = LLAMA_8B["o"]
    x, wq, w_scale, _ = inputs(300, n, k, None)
    input_scale = (x.float().abs().max() / 448.0).reshape(1)
    y = fp8_matmul.fp8_linear(x, wq, w_scale, None, input_scale)
    assert rel_max(y, ref.fp8_linear(x, wq, w_scale, None, input_scale)) <= GPU_BOUND


@pytest.mark.parametrize("m", [1, 4096])
def test_quantization_kernels_on_gpu(m: int) -> None:
    """GPU division and rounding may differ from the CPU's in the last bit: allow one fp8 step."""
    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16) * 3
    for launcher, reference in ((fp8_quant.quantize_fp8_per_token, ref.quantize_fp8_per_token),
                                (fp8_quant.quantize_fp8_per_group, ref.quantize_fp8_per_group)):
        q, s = launcher(x)
        q_ref, s_ref = reference(x)
        torch.testing.assert_close(s, s_ref, rtol=1e-6, atol=0)
        diff = (q.float() - q_ref.float()).abs()
        assert torch.all(diff <= 2**-3 * q_ref.float().abs() + 2**-9)
