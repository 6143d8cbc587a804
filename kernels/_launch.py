"""Small helpers shared by the Triton launchers: input checks and tile sizes."""

from __future__ import annotations

import torch
import triton


def require(ok: bool, message: str) -> None:
    """Raise ValueError for bad launcher input (never assert: it vanishes under -O)."""
    if not ok:
        raise ValueError(message)


def require_same_device(*tensors: torch.Tensor) -> None:
    devices = {t.device for t in tensors}
    names = sorted(map(str, devices))
    require(len(devices) == 1, f"all tensors must be on one device, got {names}")


def pow2(n: int) -> int:
    """The tile width covering n elements (Triton ranges must be powers of two)."""
    return triton.next_power_of_2(max(int(n), 1))


def out_or_new(
    out: torch.Tensor | None, shape: tuple[int, ...], like: torch.Tensor
) -> torch.Tensor:
    """The caller's output buffer (checked) or a fresh one shaped `shape` like `like`."""
    if out is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    require(tuple(out.shape) == tuple(shape), f"out has shape {tuple(out.shape)}, expected {shape}")
    require(out.dtype == like.dtype, f"out has dtype {out.dtype}, expected {like.dtype}")
    require(out.device == like.device, f"out is on {out.device}, expected {like.device}")
    require(out.is_contiguous(), "out must be contiguous")
    return out
