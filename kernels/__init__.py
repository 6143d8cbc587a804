"""Kernels for the hot paths. Leaf package: imports torch and triton only.

The engine calls these through this module only. Today every op is the torch reference
(kernels/reference.py); Triton versions plug in behind the same names.
"""

from kernels.reference import (
    paged_attention,
    rms_norm,
    rotary_embedding,
    silu_and_mul,
    write_kv_cache,
)

__all__ = ["paged_attention", "rms_norm", "rotary_embedding", "silu_and_mul", "write_kv_cache"]
