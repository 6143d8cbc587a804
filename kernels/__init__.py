"""Kernels for the hot paths. Leaf package: imports torch and triton only.

Two backends with the same members: `reference_ops` (torch, the CPU path and the tests'
oracle) and `triton_ops` (our Triton kernels). The plain names below are the torch
references the engine calls today (paged_attention with Python lists); they stay until the
engine moves to the namespaces.
"""

from kernels.ops import reference_ops, triton_ops
from kernels.reference import (
    fused_add_rms_norm,
    paged_attention,
    rms_norm,
    rotary_embedding,
    silu_and_mul,
    write_kv_cache,
)

__all__ = [
    "fused_add_rms_norm", "paged_attention", "reference_ops", "rms_norm", "rotary_embedding",
    "silu_and_mul", "triton_ops", "write_kv_cache",
]
