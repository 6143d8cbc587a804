"""The CPU's kernel namespace: the torch references, with fewer ops per call where a step
repeats the same work in every layer.

A batch-1 decode step of SmolLM2 issued ~7,500 aten calls (profiled), each a few
microseconds of host time, against ~4 ms of int8 GEMMs: the per-op count is the cost. Here
RMSNorm in float32 skips the casts (6 ops instead of ~10), and the rotary embedding's
cos/sin tables are built once per step (every layer, q and k, shares the step's positions)
and applied with one `cat` and one `addcmul`.
"""

from __future__ import annotations

import torch

from kernels.ops import ReferenceOps


class CpuOps(ReferenceOps):
    """ReferenceOps with cheaper norms and rotary; the same math (tests compare them)."""

    def __init__(self) -> None:
        # (positions, inv_freq, dtype) of the last table, and its [T, 1, D] cos and signed sin
        self._rope: tuple[torch.Tensor, torch.Tensor, torch.dtype, torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def rms_norm(
        x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        if x.dtype != torch.float32 or weight.dtype != torch.float32:
            return ReferenceOps.rms_norm(x, weight, eps, out)  # fp32 statistics for 16-bit
        # torch's F.rms_norm decomposes into ~15 ops on the CPU; these are 6, no casts.
        inv = x.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()
        result = torch.mul(x, inv).mul_(weight)
        return result if out is None else out.copy_(result)

    @staticmethod
    def fused_add_rms_norm(
        x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new_residual = x + residual
        return CpuOps.rms_norm(new_residual, weight, eps), new_residual

    def _tables(
        self, positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self._rope
        if (c is not None and c[1] is inv_freq and c[2] == dtype
                and c[0].shape == positions.shape and torch.equal(c[0], positions)):
            return c[3], c[4]
        freqs = positions.float()[:, None] * inv_freq.float()[None, :]
        cos, sin = freqs.cos(), freqs.sin()
        cos2 = torch.cat((cos, cos), dim=-1)[:, None, :].to(dtype)
        sin2 = torch.cat((-sin, sin), dim=-1)[:, None, :].to(dtype)  # rotate-half's sign
        self._rope = (positions.clone(), inv_freq, dtype, cos2, sin2)
        return cos2, sin2

    def rotary_embedding(
        self, positions: torch.Tensor, x: torch.Tensor, inv_freq: torch.Tensor,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cos2, sin2 = self._tables(positions, inv_freq, x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        result = torch.addcmul(x * cos2, torch.cat((x2, x1), dim=-1), sin2)
        return result if out is None else out.copy_(result)


cpu_ops = CpuOps()
