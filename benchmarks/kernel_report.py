"""What every Triton kernel compiles to on H100/H200 (sm_90), A100 (sm_80) and L4/4090 (sm_89),
built ahead of time on this machine: no GPU needed.

    python -m benchmarks.kernel_report                    # every case, every target
    python -m benchmarks.kernel_report --quick            # the cases CI compiles
    python -m benchmarks.kernel_report --target sm_90 --family fp8_gemm --jobs 2 --json out.json

One row per (kernel, config, dtype, model shape, target): dynamic shared memory, registers
per thread, spilled bytes, tensor-core instruction kinds, the widest global load, whether
the K/V or A/B loads are pipelined (cp.async LDGSTS or TMA) and the buffers reached. A
case the launchers keep off a target (fp8 on sm_80, a config too big for its shared memory)
shows as pruned; a compiler failure shows as ERROR and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton >= 3.9 warns when unset

from kernels.aot.cases import Case, all_cases
from kernels.aot.compile import Outcome, compile_case
from kernels.aot.targets import TARGETS

COLUMNS = ("target", "kernel", "tier", "config", "dtype", "model", "smem", "regs", "spill",
           "mma", "load", "pipelined", "stages", "note")


def _row(o: Outcome) -> dict[str, Any]:
    c, s = o.case, o.stats
    row: dict[str, Any] = {"target": o.target.label, "kernel": c.family, "tier": c.tier,
                           "config": c.config, "dtype": c.dtype, "model": c.model,
                           "hot": c.hot, "ci": c.representative, "estimate": c.smem_estimate}
    if s is not None:
        row.update(smem=s.shared_bytes, regs=s.registers, spill=s.spill_bytes,
                   mma="+".join(s.mma) or "-", load=f"{s.widest_load_bits}b",
                   pipelined=("TMA" if s.tma else "cp.async") if s.async_copy else "no",
                   stages=s.stages, note="")
    else:
        row["note"] = f"pruned: {o.pruned}" if o.pruned else f"ERROR {o.error}"
    return row


def _compile(job: tuple[int, str]) -> dict[str, Any]:
    """(case index in all_cases(), target label): kernels do not pickle, so workers rebuild
    the case list and pick by index."""
    index, label = job
    target = next(t for t in TARGETS if t.label == label)
    return _row(compile_case(_cases()[index], target))


_CASES: list[Case] = []


def _cases() -> list[Case]:
    if not _CASES:
        _CASES.extend(all_cases())
    return _CASES


def print_table(rows: list[dict[str, Any]]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in COLUMNS}
    print("  ".join(c.ljust(widths[c]) for c in COLUMNS))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in COLUMNS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the cases CI compiles")
    parser.add_argument("--target", action="append", choices=[t.label for t in TARGETS],
                        help="repeatable; default: every target")
    parser.add_argument("--family", action="append", help="kernel family filter (repeatable)")
    parser.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="compiler processes")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)

    targets = [t for t in TARGETS if not args.target or t.label in args.target]
    cases = [i for i, c in enumerate(_cases()) if (c.representative or not args.quick)
             and (not args.family or c.family in args.family)]
    jobs = [(i, t.label) for t in targets for i in cases]
    start = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(_compile, jobs, chunksize=4))
    else:
        rows = [_compile(job) for job in jobs]
    print_table(rows)
    errors = [r for r in rows if r["note"].startswith("ERROR")]
    print(f"\n{len(rows)} rows ({sum(1 for r in rows if 'smem' in r)} compiled, "
          f"{sum(1 for r in rows if r['note'].startswith('pruned'))} pruned, {len(errors)} "
          f"errors) in {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
