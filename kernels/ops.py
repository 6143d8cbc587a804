"""The kernel contract (`KernelOps`) and its two implementations.

`reference_ops`: the torch references (CPU path, the tests' oracle); `triton_ops`: the Triton
launchers (CUDA, or the CPU under TRITON_INTERPRET=1). The engine picks one per device and
calls only what the Protocol declares; tests/kernels/test_ops_contract.py checks that both
implementations have exactly these members with these signatures.
"""

from __future__ import annotations

from typing import Protocol

import torch

from kernels import fp8_matmul, reference
from kernels.activation import silu_and_mul
from kernels.decode_attention import paged_decode_attention
from kernels.kv_cache import write_kv_cache
from kernels.norm import fused_add_rms_norm, rms_norm
from kernels.prefill_attention import paged_attention
from kernels.rotary import rotary_embedding


class KernelOps(Protocol):
    """Every hot op of the model. `out`, where accepted, is a caller-owned result buffer
    (contiguous, the result's shape and dtype): CUDA graphs need outputs at fixed addresses."""

    def rms_norm(
        self, x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [T, H] -> x / rms(x) * weight, statistics in fp32, in x's dtype."""
        ...

    def fused_add_rms_norm(
        self, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rms_norm(x + residual) * weight, x + residual): the pre-norm residual stream."""
        ...

    def silu_and_mul(self, gate_up: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """gate_up [T, 2I] = [gate | up] -> silu(gate) * up [T, I] (SwiGLU)."""
        ...

    def rotary_embedding(
        self,
        positions: torch.Tensor,
        x: torch.Tensor,
        inv_freq: torch.Tensor,
        out: torch.Tensor | None = None,
        plan: object | None = None,
    ) -> torch.Tensor:
        """x [T, heads, D] rotated (HF rotate-half layout) by positions [T], inv_freq [D/2].
        plan: this step's plan_step result for these positions (or None)."""
        ...

    def write_kv_cache(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
        plan: object | None = None,
    ) -> None:
        """k, v [T, kv_heads, D] into caches [blocks, block_size, kv_heads, D] at
        slot = block * block_size + offset, in place; a negative slot skips its token.
        plan: this step's plan_step result for this slot_mapping (or None)."""
        ...

    def paged_attention(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        block_tables: torch.Tensor,
        context_lens: torch.Tensor,
        query_start_loc: torch.Tensor,
        max_query_len: int,
        scale: float,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Causal attention of q [T, Hq, D] (sequences packed by query_start_loc [S+1]) over
        the paged cache, whose K/V already hold the new tokens: prefill, chunked prefill and
        mixed batches. max_query_len bounds every query length (it sizes a kernel's grid)."""
        ...

    def paged_decode_attention(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        block_tables: torch.Tensor,
        context_lens: torch.Tensor,
        scale: float,
        num_splits: int | None = None,
        out: torch.Tensor | None = None,
        plan: object | None = None,
    ) -> torch.Tensor:
        """One query per sequence, q [B, Hq, D] -> [B, Hq, D]; a context of 0 gives zeros.
        num_splits shapes a kernel's split-KV launch (None: chosen from the shapes).
        plan: this step's plan_step result for these tables and lengths (or None)."""
        ...

    def plan_step(
        self,
        positions: torch.Tensor,
        inv_freq: torch.Tensor,
        dtype: torch.dtype,
        slot_mapping: torch.Tensor,
        block_tables: torch.Tensor,
        context_lens: torch.Tensor,
        block_size: int,
        decode: bool,
    ) -> object | None:
        """What every layer of one forward would otherwise work out again from the same
        index tensors (rotary tables, whether a slot is padding, how decode rows group),
        built once per forward and passed as `plan` to that forward's rotary_embedding,
        write_kv_cache and paged_decode_attention. Valid only while those tensors keep
        their values. None: nothing to plan (a kernel reads the tensors on the device)."""
        ...

    def quantize_fp8_weight(
        self, w: torch.Tensor, block_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """w [N, K] -> (float8_e4m3fn [N, K], fp32 scale [N] or [N/bs, K/bs] per block)."""
        ...

    def fp8_linear(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None = None,
        input_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [M, K] quantized to fp8 (per token, per 1x128 group for block-scaled weights,
        or the static input_scale) times dequant(weight).T, + bias, in x's dtype."""
        ...


class ReferenceOps:
    """The torch references: correct on any device, slow."""

    rms_norm = staticmethod(reference.rms_norm)
    fused_add_rms_norm = staticmethod(reference.fused_add_rms_norm)
    silu_and_mul = staticmethod(reference.silu_and_mul)
    rotary_embedding = staticmethod(reference.rotary_embedding)
    write_kv_cache = staticmethod(reference.write_kv_cache)
    paged_attention = staticmethod(reference.paged_attention)
    paged_decode_attention = staticmethod(reference.paged_decode_attention)
    quantize_fp8_weight = staticmethod(reference.quantize_fp8_weight)
    fp8_linear = staticmethod(reference.fp8_linear)
    plan_step = staticmethod(reference.plan_step)


class TritonOps:
    """The Triton launchers."""

    rms_norm = staticmethod(rms_norm)
    fused_add_rms_norm = staticmethod(fused_add_rms_norm)
    silu_and_mul = staticmethod(silu_and_mul)
    rotary_embedding = staticmethod(rotary_embedding)
    write_kv_cache = staticmethod(write_kv_cache)
    paged_attention = staticmethod(paged_attention)
    paged_decode_attention = staticmethod(paged_decode_attention)
    # load time only: both backends share the torch quantizer
    quantize_fp8_weight = staticmethod(reference.quantize_fp8_weight)
    fp8_linear = staticmethod(fp8_matmul.fp8_linear)
    plan_step = staticmethod(reference.plan_step)  # the kernels need no host-side plan


# Module-level singletons: the engine compares against them by identity.
reference_ops: KernelOps = ReferenceOps()
triton_ops: KernelOps = TritonOps()
