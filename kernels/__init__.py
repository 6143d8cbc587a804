"""Kernels for the hot paths. Leaf package: imports torch and triton only.

The engine calls these through this module only. The plain names are the torch references
(kernels/reference.py); `reference_ops` and `triton_ops` hold the same op names per backend,
so the engine picks a backend once (Triton on CUDA, or forced on the CPU under
TRITON_INTERPRET=1; the references otherwise).
"""

from types import SimpleNamespace

from kernels import fp8_matmul
from kernels.reference import (
    fp8_linear,
    paged_attention,
    quantize_fp8_weight,
    rms_norm,
    rotary_embedding,
    silu_and_mul,
    write_kv_cache,
)

reference_ops = SimpleNamespace(
    quantize_fp8_weight=quantize_fp8_weight,
    fp8_linear=fp8_linear,
)
triton_ops = SimpleNamespace(
    quantize_fp8_weight=quantize_fp8_weight,  # load time only: both backends share the torch one
    fp8_linear=fp8_matmul.fp8_linear,
)

__all__ = [
    "fp8_linear", "paged_attention", "quantize_fp8_weight", "reference_ops", "rms_norm",
    "rotary_embedding", "silu_and_mul", "triton_ops", "write_kv_cache",
]
