"""What a compiled kernel does on its GPU, read from its cubin (SASS) and its Triton GPU IR.

Uses the `cuobjdump` that ships inside Triton's NVIDIA backend, so it works with no GPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import triton

# Tensor-core MMA opcodes: HMMA (mma.sync), HGMMA/QGMMA (Hopper wgmma, 16-bit / fp8),
# IMMA (integers); anything else doing a dot is FFMA on the CUDA cores.
_MMA = re.compile(r"\b([HQI]G?MMA)\b")
# Global loads: LDG.E.128 (plain), LDGSTS.E.BYPASS.128 (cp.async to shared memory).
_LOAD = re.compile(r"\b(LDGSTS|LDG)((?:\.[A-Z0-9_]+)*)")
_TMA = re.compile(r"\b(UTMALDG|UBLKCP)\b")
# The staged buffers of a software pipeline: a local_alloc of a [stages, rows, cols] tile.
_STAGED_ALLOC = re.compile(r"ttg\.local_alloc\s*:\s*\(\)\s*->\s*!ttg\.memdesc<(\d+)x\d+x\d+x")


@dataclass(frozen=True)
class BinaryStats:
    shared_bytes: int  # dynamic shared memory the launch asks for
    registers: int  # per thread
    spill_bytes: int  # local memory per thread (spills and stack-resident arrays)
    mma: tuple[str, ...]  # tensor-core instruction kinds, sorted
    widest_load_bits: int  # widest global load (LDG or cp.async) in the SASS
    async_copy: bool  # global->shared loads by cp.async (LDGSTS) or TMA: a pipelined loop
    tma: bool
    stages: int  # buffers of the deepest staged shared-memory tile (1: not pipelined)


def _tool(name: str) -> str:
    """The CUDA binary tool bundled with Triton (or $TRITON_CUOBJDUMP_PATH)."""
    override = os.environ.get(f"TRITON_{name.upper()}_PATH")
    if override:
        return override
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not bundled.exists():
        raise FileNotFoundError(f"{name} not found at {bundled}: Triton's NVIDIA backend is missing")
    return str(bundled)


def _cuobjdump(cubin: bytes, *flags: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        done = subprocess.run([_tool("cuobjdump"), *flags, str(path)], capture_output=True,
                              text=True, check=True)
    return done.stdout


def _load_bits(suffixes: str) -> int:
    for part in suffixes.split("."):
        if part in ("64", "128"):
            return int(part)
        if part in ("U8", "S8"):
            return 8
        if part in ("U16", "S16"):
            return 16
    return 32  # no width suffix: a 32-bit load


def inspect_kernel(cubin: bytes, ttgir: str, shared_bytes: int) -> BinaryStats:
    usage = _cuobjdump(cubin, "-res-usage")
    regs = re.search(r"REG:(\d+)", usage)
    local = re.search(r"LOCAL:(\d+)", usage)
    stack = re.search(r"STACK:(\d+)", usage)
    sass = _cuobjdump(cubin, "-sass")
    loads = [_load_bits(m.group(2)) for m in _LOAD.finditer(sass)]
    staged = [int(n) for n in _STAGED_ALLOC.findall(ttgir)]
    return BinaryStats(
        shared_bytes=shared_bytes,
        registers=int(regs.group(1)) if regs else 0,
        spill_bytes=(int(local.group(1)) if local else 0) + (int(stack.group(1)) if stack else 0),
        mma=tuple(sorted(set(_MMA.findall(sass)))),
        widest_load_bits=max(loads, default=0),
        async_copy="LDGSTS" in sass or bool(_TMA.search(sass)),
        tma=bool(_TMA.search(sass)),
        stages=max(staged, default=1),
    )
