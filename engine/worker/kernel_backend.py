"""Which kernels run the model: the Triton ones on CUDA, the torch reference elsewhere."""

from __future__ import annotations

import os
from types import SimpleNamespace

import torch

import kernels
from engine.worker.cpu_ops import cpu_ops


def select_ops(kernel_backend: str, device: torch.device) -> SimpleNamespace:
    """kernel_backend "auto" | "torch" | "triton" -> the kernel namespace for `device`.

    "triton" on the CPU runs the kernels through Triton's interpreter (slow; for tests and
    debugging), which must be switched on before the kernels are imported.
    """
    if kernel_backend == "torch" or (kernel_backend == "auto" and device.type != "cuda"):
        # On the CPU: the references with fewer host ops per step (same math).
        return cpu_ops if device.type == "cpu" else kernels.reference_ops
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("kernel_backend='triton' on the CPU needs TRITON_INTERPRET=1 in the "
                         "environment before the engine is imported")
    return kernels.triton_ops


def uses_cuda_graphs(ops: SimpleNamespace, device: torch.device, enforce_eager: bool) -> bool:
    """Graphs only capture the Triton path on a GPU (the reference path syncs with the host)."""
    return device.type == "cuda" and ops is kernels.triton_ops and not enforce_eager
