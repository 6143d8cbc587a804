"""The GPU targets the kernels are compiled for ahead of time, with the limits they are held to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    arch: int  # compute capability as Triton writes it: 90 = sm_90
    smem_bytes: int  # per-block shared memory with the opt-in (cudaFuncSetAttribute) limit
    fp8: bool  # has fp8 (e4m3) tensor-core MMA

    @property
    def label(self) -> str:
        return f"sm_{self.arch}"


# Shared-memory limits are the CUDA programming guide's opt-in maxima per block.
SM90 = Target("H100/H200", 90, 232_448, fp8=True)
SM89 = Target("L4/RTX 4090", 89, 101_376, fp8=True)
SM80 = Target("A100", 80, 166_912, fp8=False)
TARGETS: tuple[Target, ...] = (SM90, SM80, SM89)
BY_ARCH = {t.arch: t for t in TARGETS}


def target_for_capability(major: int, minor: int) -> Target | None:
    """The known target of a device's compute capability (None: not one we compile for)."""
    return BY_ARCH.get(10 * major + minor)
