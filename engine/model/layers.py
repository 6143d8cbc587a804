"""Building blocks of the Llama transformer: norm, rotary embedding, SwiGLU MLP.

Every hot op goes through `ops`, the kernel namespace the engine chose (kernels.reference_ops
or kernels.triton_ops); the modules hold it as a plain attribute.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
from torch import nn

from engine.config import ModelConfig, RopeScaling
from engine.model.fp8 import Fp8Linear, Fp8Spec

if TYPE_CHECKING:
    from engine.parallel.comm import TPComm


def make_linear(
    in_features: int, out_features: int, bias: bool, fp8: Fp8Spec | None, ops: SimpleNamespace
) -> nn.Module:
    """A projection: plain, or FP8 when the checkpoint ships FP8 weights."""
    if fp8 is None:
        return nn.Linear(in_features, out_features, bias=bias)
    return Fp8Linear(in_features, out_features, bias, fp8, ops)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, ops: SimpleNamespace) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.ops = ops

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(normed, residual stream): with `residual`, adds it to x first (one fused kernel)."""
        if residual is None:
            return self.ops.rms_norm(x, self.weight, self.eps), x
        return self.ops.fused_add_rms_norm(x, residual, self.weight, self.eps)


def rope_inv_freq(
    head_dim: int, theta: float, scaling: RopeScaling | None
) -> torch.Tensor:
    """Inverse frequencies of the rotary embedding, with Llama 3.1 / linear scaling applied."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling is None:
        return inv_freq.float()
    if scaling.rope_type == "linear":
        return (inv_freq / scaling.factor).float()
    # llama3: long wavelengths are slowed by `factor`, short ones kept, the middle band blended.
    old_len = scaling.original_max_position_embeddings
    low_wavelen = old_len / scaling.low_freq_factor
    high_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    blended = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled).float()


class RotaryEmbedding(nn.Module):
    """Rotary position embedding; frequencies are a buffer so they follow .to(device)."""

    def __init__(self, config: ModelConfig, ops: SimpleNamespace) -> None:
        super().__init__()
        self.config = config
        self.ops = ops
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self) -> torch.Tensor:
        c = self.config
        return rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling)

    def reset(self, device: torch.device, freq_factors: torch.Tensor | None = None) -> None:
        """Recompute the float32 frequencies after meta-device construction.

        GGUF files of rope-scaled models ship per-frequency divisors (`rope_freqs`) instead
        of the scaling parameters; pass them as `freq_factors`.
        """
        inv_freq = self._inv_freq()
        if freq_factors is not None:
            inv_freq = inv_freq / freq_factors.float().cpu()
        self.inv_freq = inv_freq.to(device)

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, plan: object | None = None
    ) -> torch.Tensor:
        """plan: the step's ops.plan_step (its rotary tables), or None."""
        return self.ops.rotary_embedding(positions, x, self.inv_freq, plan=plan)


class MLP(nn.Module):
    """SwiGLU feed-forward with gate and up projections fused into one matmul; with tensor
    parallelism the rank's share of the width, down_proj's partial sums added over ranks."""

    def __init__(self, config: ModelConfig, ops: SimpleNamespace, fp8: Fp8Spec | None,
                 comm: TPComm | None = None) -> None:
        super().__init__()
        self.comm = comm
        bias, hidden, inter = config.mlp_bias, config.hidden_size, config.intermediate_size
        self.ops = ops
        self.gate_up_proj = make_linear(hidden, 2 * inter, bias, fp8, ops)
        self.down_proj = make_linear(inter, hidden, bias, fp8, ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.down_proj(self.ops.silu_and_mul(self.gate_up_proj(x)))
        return out if self.comm is None else self.comm.all_reduce(out)
