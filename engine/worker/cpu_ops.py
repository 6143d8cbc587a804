"""The CPU's kernel namespace: the torch references, with fewer ops per call where a step
repeats the same work in every layer.

A batch-1 decode step of SmolLM2 is ~14 ms of int8 GEMMs and, before these cuts, 1,845 other
aten calls of a few microseconds of host time each: the per-op count is the cost. So:
- what every layer of a step would work out again from the same index tensors is built once
  per forward (`plan_step`, a `CpuStepPlan`): the rotary tables, whether any slot is padding
  (3 ops per layer otherwise), the decode attention's grouping (kernels/cpu_attention.py);
  no per-layer torch.equal checks that the indices are still the step's;
- RMSNorm in float32 is torch's one composite call (F.rms_norm) instead of ~10 ops;
- the rotary embedding of a small step is one bmm with per-token rotation matrices, of a
  larger one a `cat` and an `addcmul` (measured crossover, ROTATION_MAX_TOKENS);
- the KV write indexes the cache as [slots, kv_heads, D]: no reshape of k and v.
Without a plan (direct callers, tests) an op works everything out from its own arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels import cpu_attention
from kernels.ops import ReferenceOps
from kernels.reference import _into

# A step of at most this many tokens rotates q and k with one bmm by [T, D, D] rotation
# matrices; measured (12 heads x 64, 1 thread, 2-core dev machine): 1 token 4.5 vs 15.2 us
# for chunk/cat/addcmul, 8 tokens 14.6 vs 19.8, 16 tokens 26.1 vs 24.4 (past the crossover).
ROTATION_MAX_TOKENS = 8


@dataclass
class CpuStepPlan:
    """One forward's per-step facts (CpuOps.plan_step); valid while its tensors keep their
    values, which holds within one forward."""

    inv_freq: torch.Tensor  # the frequencies the tables were built with (checked by identity)
    dtype: torch.dtype  # the activations' dtype the tables are in
    cos2: torch.Tensor  # [T, 1, D] cos of each token's angles, both halves
    sin2: torch.Tensor  # [T, 1, D] sin with rotate-half's sign (-sin | sin)
    rotation: torch.Tensor | None  # [T, D, D]: x[t] @ rotation[t] rotates token t (small T)
    padded: bool  # some slot is negative (a padding token): the KV write must filter
    decode: cpu_attention.DecodePlan | None  # a pure decode step's grouping


def _rope_tables(
    positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = positions.float()[:, None] * inv_freq.float()[None, :]
    cos, sin = freqs.cos(), freqs.sin()
    cos2 = torch.cat((cos, cos), dim=-1)[:, None, :].to(dtype)
    sin2 = torch.cat((-sin, sin), dim=-1)[:, None, :].to(dtype)  # rotate-half's sign
    return cos2, sin2


def _rotation(cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
    """[T, D, D] with x @ R = x * cos2 + rotate_half(x) * sin2: output j takes cos2[j] of
    input j and sin2[j] of input (j + D/2) mod D (rotate-half's partner)."""
    half = cos2.shape[-1] // 2
    return torch.diag_embed(cos2[:, 0]) + torch.diag_embed(sin2[:, 0]).roll(half, dims=1)


class CpuOps(ReferenceOps):
    """ReferenceOps with cheaper norms, rotary, KV write and per-step plans; the same math
    (tests compare them)."""

    @staticmethod
    def rms_norm(
        x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        if x.dtype != torch.float32 or weight.dtype != torch.float32:
            return ReferenceOps.rms_norm(x, weight, eps, out)  # fp32 statistics for 16-bit
        result = F.rms_norm(x, weight.shape, weight, eps)  # one call; the same math in fp32
        return result if out is None else out.copy_(result)

    @staticmethod
    def fused_add_rms_norm(
        x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new_residual = x + residual
        return CpuOps.rms_norm(new_residual, weight, eps), new_residual

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
    ) -> CpuStepPlan:
        cos2, sin2 = _rope_tables(positions, inv_freq, dtype)
        small = positions.shape[0] <= ROTATION_MAX_TOKENS and dtype == torch.float32
        padded = bool((slot_mapping < 0).any())
        decode_plan = cpu_attention.build_plan(block_tables, context_lens, block_size) if (
            decode and block_tables.device.type == "cpu") else None
        return CpuStepPlan(inv_freq, dtype, cos2, sin2, _rotation(cos2, sin2) if small else None,
                           padded, decode_plan)

    def rotary_embedding(
        self, positions: torch.Tensor, x: torch.Tensor, inv_freq: torch.Tensor,
        out: torch.Tensor | None = None, plan: CpuStepPlan | None = None,
    ) -> torch.Tensor:
        if plan is not None and plan.inv_freq is inv_freq and plan.dtype == x.dtype:
            if plan.rotation is not None:
                return _into(out, torch.bmm(x, plan.rotation))
            cos2, sin2 = plan.cos2, plan.sin2
        else:  # no plan (a direct call): this call's own tables
            cos2, sin2 = _rope_tables(positions, inv_freq, x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        result = torch.addcmul(x * cos2, torch.cat((x2, x1), dim=-1), sin2)
        return result if out is None else out.copy_(result)

    @staticmethod
    def write_kv_cache(
        k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
        slot_mapping: torch.Tensor, plan: CpuStepPlan | None = None,
    ) -> None:
        if plan is None or plan.padded:  # the reference filters the padding tokens out
            ReferenceOps.write_kv_cache(k, v, k_cache, v_cache, slot_mapping)
            return
        rows = (-1, *k_cache.shape[2:])  # [slots, kv_heads, D]: k and v as they are
        k_cache.view(rows).index_copy_(0, slot_mapping, k)
        v_cache.view(rows).index_copy_(0, slot_mapping, v)

    @staticmethod
    def paged_decode_attention(
        q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
        block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float,
        num_splits: int | None = None, out: torch.Tensor | None = None,
        plan: CpuStepPlan | None = None,
    ) -> torch.Tensor:
        if plan is None or plan.decode is None or q.device.type != "cpu":
            return ReferenceOps.paged_decode_attention(
                q, k_cache, v_cache, block_tables, context_lens, scale, num_splits, out)
        return _into(out, cpu_attention.paged_decode_attention(
            q, k_cache, v_cache, block_tables, context_lens, scale, plan.decode))


cpu_ops = CpuOps()
