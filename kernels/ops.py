"""The two kernel backends as namespaces with identical members (the kernel contract).

`reference_ops`: the torch references (CPU path, oracle); `triton_ops`: the Triton
launchers (CUDA, or the CPU under TRITON_INTERPRET=1). The engine picks one.
"""

from __future__ import annotations

from types import SimpleNamespace

from kernels import fp8_matmul, reference
from kernels.activation import silu_and_mul
from kernels.kv_cache import write_kv_cache
from kernels.norm import fused_add_rms_norm, rms_norm
from kernels.paged_attention import paged_decode_attention
from kernels.prefill_attention import paged_attention
from kernels.rotary import rotary_embedding

reference_ops = SimpleNamespace(
    rms_norm=reference.rms_norm,
    fused_add_rms_norm=reference.fused_add_rms_norm,
    silu_and_mul=reference.silu_and_mul,
    rotary_embedding=reference.rotary_embedding,
    write_kv_cache=reference.write_kv_cache,
    paged_attention=reference.paged_attention,
    paged_decode_attention=reference.paged_decode_attention,
    quantize_fp8_weight=reference.quantize_fp8_weight,
    fp8_linear=reference.fp8_linear,
)

triton_ops = SimpleNamespace(
    rms_norm=rms_norm,
    fused_add_rms_norm=fused_add_rms_norm,
    silu_and_mul=silu_and_mul,
    rotary_embedding=rotary_embedding,
    write_kv_cache=write_kv_cache,
    paged_attention=paged_attention,
    paged_decode_attention=paged_decode_attention,
    quantize_fp8_weight=reference.quantize_fp8_weight,  # load time only: both share the torch one
    fp8_linear=fp8_matmul.fp8_linear,
)
