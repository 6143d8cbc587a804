"""CPU decode attention: the matmul path (kernels.cpu_attention) against the SDPA one.

    python -m benchmarks.cpu_attention            # sweep, prints a table, saves JSON
    python -m benchmarks.cpu_attention --quick    # one small point, to check it runs

SmolLM2-135M attention shape: 9 query heads over 3 KV heads, head_dim 64, float32, KV
block 16, blocks shuffled in the cache. Each point times both paths interleaved (A, B, A,
B, ...) so a noisy shared machine slows both alike; the median per call is reported with
the ratio SDPA / matmul (> 1: the matmul path wins). The plan (per-step padding, built once
and reused by every layer) is built outside the timed region for the matmul path, as the
engine amortizes it over its layers; SDPA's per-call mask is timed, as the engine pays it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

from benchmarks.common import save
from kernels import cpu_attention, reference

Q_HEADS, KV_HEADS, HEAD_DIM, BLOCK = 9, 3, 64, 16
BATCHES = (1, 8, 32)
CONTEXTS = (16, 64, 256, 1024, 4096)


def _case(batch: int, ctx: int) -> tuple[torch.Tensor, ...]:
    nb = -(-ctx // BLOCK)
    num_blocks = batch * nb + 1
    k_cache = torch.randn(num_blocks, BLOCK, KV_HEADS, HEAD_DIM)
    v_cache = torch.randn_like(k_cache)
    tables = torch.randperm(num_blocks)[: batch * nb].view(batch, nb).int()
    lens = torch.full((batch,), ctx, dtype=torch.int32)
    q = torch.randn(batch, Q_HEADS, HEAD_DIM)
    return q, k_cache, v_cache, tables, lens


def _interleaved(fns: list[Callable[[], object]], reps: int) -> list[float]:
    times: list[list[float]] = [[] for _ in fns]
    for f in fns:
        f()  # warm-up
    for _ in range(reps):
        for i, f in enumerate(fns):
            start = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - start)
    return [1e6 * statistics.median(t) for t in times]


def point(batch: int, ctx: int, reps: int) -> dict:
    q, k, v, tables, lens = _case(batch, ctx)
    plan = cpu_attention.build_plan(tables, lens, BLOCK)
    group = dataclasses.replace(plan.groups[0], use_sdpa=False)  # the matmul path
    scale = HEAD_DIM**-0.5
    lens_list = lens.tolist()

    def sdpa() -> torch.Tensor:
        return reference._decode_attention(q, k, v, tables, lens_list, scale)

    def matmul() -> torch.Tensor:
        return cpu_attention._attend(q, k, v, group, scale)

    torch.testing.assert_close(matmul(), sdpa(), atol=1e-4, rtol=1e-4)
    sdpa_us, matmul_us = _interleaved([sdpa, matmul], reps)
    return {"batch": batch, "context": ctx, "sdpa_us": round(sdpa_us, 1),
            "matmul_us": round(matmul_us, 1), "sdpa_over_matmul": round(sdpa_us / matmul_us, 2)}


def run(batches: tuple[int, ...], contexts: tuple[int, ...], reps: int) -> list[dict]:
    rows = []
    for batch in batches:
        for ctx in contexts:
            row = point(batch, ctx, reps)
            rows.append(row)
            print(f"{batch:>5} {ctx:>7} {row['sdpa_us']:>10.1f} {row['matmul_us']:>10.1f} "
                  f"{row['sdpa_over_matmul']:>8.2f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 is steadier on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches, contexts = ((1,), (64,)) if args.quick else (BATCHES, CONTEXTS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{Q_HEADS}/{KV_HEADS} heads x {HEAD_DIM}, block {BLOCK}, float32, median of "
          f"{args.reps} interleaved calls")
    print(f"{'batch':>5} {'context':>7} {'sdpa us':>10} {'matmul us':>10} {'ratio':>8}")
    rows = run(batches, contexts, args.reps)
    if not args.quick:
        print("saved", save("cpu_attention", {"loadavg_1m": os.getloadavg()[0], "shape": [Q_HEADS, KV_HEADS, HEAD_DIM, BLOCK],
                                               "reps": args.reps, "threads": torch.get_num_threads(), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
