"""Compile a kernel case for a GPU target with no GPU present, and say how it came out."""

from __future__ import annotations

from dataclasses import dataclass

import triton
from triton.backends.compiler import GPUTarget

from kernels.aot.cases import Case
from kernels.aot.inspect_binary import BinaryStats, inspect_kernel
from kernels.aot.specialize import specialize
from kernels.aot.targets import Target


@dataclass(frozen=True)
class Outcome:
    case: Case
    target: Target
    stats: BinaryStats | None = None
    pruned: str | None = None  # why the launcher never runs this case on this target
    error: str | None = None  # the compiler's complaint: a bug to fix


def prune_reason(case: Case, target: Target) -> str | None:
    """Why the launchers keep this case off the target (None: it runs there).

    The same rules the launchers apply: fp8 needs sm_89+ (fp8_matmul.require_fp8_device),
    and an FP8 GEMM config must fit the target's shared memory (fp8_matmul.prune_configs).
    """
    if case.fp8 and not target.fp8:
        return f"no fp8 MMA on {target.label}"
    if case.smem_estimate is not None and case.smem_estimate > target.smem_bytes:
        return f"{case.smem_estimate} B of shared memory > {target.smem_bytes}"
    return None


def compile_case(case: Case, target: Target) -> Outcome:
    reason = prune_reason(case, target)
    if reason:
        return Outcome(case, target, pruned=reason)
    signature, constexprs, attrs = specialize(case.kernel, case.args)
    src = triton.compiler.ASTSource(case.kernel, signature, constexprs, attrs)
    options = {"num_warps": case.num_warps, "num_stages": case.num_stages}
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", target.arch, 32), options=options)
    except Exception as exc:  # noqa: BLE001 - any compiler failure is the finding
        first = str(exc).strip().splitlines()
        return Outcome(case, target, error=f"{type(exc).__name__}: {first[0] if first else ''}")
    stats = inspect_kernel(compiled.asm["cubin"], compiled.asm["ttgir"], compiled.metadata.shared)
    return Outcome(case, target, stats=stats)
