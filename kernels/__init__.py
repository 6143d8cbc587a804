"""Kernels for the hot paths. Leaf package: imports torch and triton only.

Two backends with the same members (the kernel contract, built in kernels/ops.py):
`reference_ops` (torch: the CPU path and the tests' oracle) and `triton_ops` (our Triton
kernels: CUDA, or the CPU under TRITON_INTERPRET=1). The engine picks one per device.
"""

from kernels.ops import reference_ops, triton_ops

__all__ = ["reference_ops", "triton_ops"]
