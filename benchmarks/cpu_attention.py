"""CPU decode attention: kernels.cpu_attention's two paths against torch's GQA SDPA.

    python -m benchmarks.cpu_attention            # sweep, prints a table, saves JSON
    python -m benchmarks.cpu_attention --quick    # one small point, to check it runs

SmolLM2-135M attention shape: 9 query heads over 3 KV heads, head_dim 64, float32, KV
block 16, blocks shuffled in the cache. Each point times both paths interleaved (A, B, A,
B, ...) so a noisy shared machine slows both alike; the median per call is reported.
Paths, all over the same gathered blocks (kernels.cpu_attention._attend): `fold` (SDPA with
each KV head's query heads as its queries: K/V read once per KV head), `gqa` (SDPA with
enable_gqa, one query per head) and `matmul` (two batched matmuls and a softmax: the
engine's path for small groups before `fold` measured faster). The engine's choice
(cpu_attention.FOLD_MAX_KEYS) is printed. The ratios are gqa / fold and matmul / fold (> 1:
fold wins). The plan (per-step padding, built once and reused by every layer) is built
outside the timed region, as the engine amortizes it over its layers.
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
from kernels import cpu_attention

Q_HEADS, KV_HEADS, HEAD_DIM, BLOCK = 9, 3, 64, 16
BATCHES = (1, 4, 8, 16, 32)
CONTEXTS = (16, 64, 128, 256, 600, 1024)


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


def _matmul_attend(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   group: cpu_attention.DecodeGroup, scale: float) -> torch.Tensor:
    """The former matmul path, kept here as the comparison."""
    b, heads, dim = q.shape
    kv_heads = k_cache.shape[2]
    k = k_cache.index_select(0, group.flat).view(b, -1, kv_heads, dim)
    v = v_cache.index_select(0, group.flat).view(b, -1, kv_heads, dim)
    if group.length is not None:
        k, v = k[:, : group.length], v[:, : group.length]
    qg = q.view(b, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(qg, k.permute(0, 2, 3, 1)).mul_(scale)
    if group.keep is not None:
        scores.masked_fill_(~group.keep, float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), v.transpose(1, 2))
    return out.view(b, heads, dim)


def point(batch: int, ctx: int, reps: int) -> dict:
    q, k, v, tables, lens = _case(batch, ctx)
    plan = cpu_attention.build_plan(tables, lens, BLOCK)
    group = plan.groups[0]
    fold_group = dataclasses.replace(group, fold=True)
    gqa_group = dataclasses.replace(group, fold=False)
    scale = HEAD_DIM**-0.5

    def gqa() -> torch.Tensor:
        return cpu_attention._attend(q, k, v, gqa_group, scale)

    def matmul() -> torch.Tensor:
        return _matmul_attend(q, k, v, group, scale)

    def fold() -> torch.Tensor:
        return cpu_attention._attend(q, k, v, fold_group, scale)

    torch.testing.assert_close(matmul(), gqa(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fold(), gqa(), atol=1e-4, rtol=1e-4)
    gqa_us, matmul_us, fold_us = _interleaved([gqa, matmul, fold], reps)
    return {"batch": batch, "context": ctx, "gqa_us": round(gqa_us, 1),
            "matmul_us": round(matmul_us, 1), "fold_us": round(fold_us, 1),
            "gqa_over_fold": round(gqa_us / fold_us, 2),
            "matmul_over_fold": round(matmul_us / fold_us, 2),
            "engine": "fold" if group.fold else "gqa"}


def run(batches: tuple[int, ...], contexts: tuple[int, ...], reps: int) -> list[dict]:
    rows = []
    for batch in batches:
        for ctx in contexts:
            row = point(batch, ctx, reps)
            rows.append(row)
            print(f"{batch:>5} {ctx:>7} {row['gqa_us']:>9.1f} {row['matmul_us']:>9.1f} "
                  f"{row['fold_us']:>9.1f} {row['gqa_over_fold']:>8.2f} "
                  f"{row['matmul_over_fold']:>8.2f} {row['engine']:>6}", flush=True)
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
    print(f"{'batch':>5} {'context':>7} {'gqa us':>9} {'matmul us':>9} {'fold us':>9} "
          f"{'gqa/fold':>8} {'mm/fold':>8} {'engine':>6}")
    rows = run(batches, contexts, args.reps)
    if not args.quick:
        print("saved", save("cpu_attention", {"loadavg_1m": os.getloadavg()[0], "shape": [Q_HEADS, KV_HEADS, HEAD_DIM, BLOCK],
                                               "reps": args.reps, "threads": torch.get_num_threads(), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
