"""Throughput under continuous batching vs the same requests one at a time.

N requests with seeded random prompt/output lengths are submitted together to the async
engine; we record output tokens/s, total tokens/s, time per output token (TPOT) and time
to first token (TTFT), then run the same requests sequentially (max_num_seqs=1 engine,
one request after another) for the speedup.

    python -m benchmarks.throughput --model smollm2-135m-instruct --num-requests 32
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass

from tqdm import tqdm

from benchmarks.common import ms_stats, save
from engine import AsyncEngine, EngineConfig, SamplingParams


@dataclass
class Timing:
    ttft: float
    tpot: float | None  # mean seconds between output tokens after the first
    latency: float
    output_tokens: int


def make_workload(args: argparse.Namespace, vocab: int) -> list[tuple[list[int], int]]:
    rng = random.Random(args.seed)
    return [
        ([rng.randrange(100, vocab) for _ in range(rng.randint(*args.prompt_len))],
         rng.randint(*args.output_len))
        for _ in range(args.num_requests)
    ]


async def one(engine: AsyncEngine, rid: str, prompt: list[int], max_tokens: int, bar: tqdm) -> Timing:
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    start = time.perf_counter()
    first = None
    n = 0
    async for out in await engine.add_request(rid, prompt, params):  # DELTA outputs
        if first is None and out.outputs[0].token_ids:
            first = time.perf_counter()
        n += sum(len(o.token_ids) for o in out.outputs)
    end = time.perf_counter()
    bar.update(1)
    tpot = (end - first) / (n - 1) if n > 1 else None
    return Timing(first - start, tpot, end - start, n)


async def run_batched(engine: AsyncEngine, workload: list[tuple[list[int], int]], desc: str) -> tuple[float, list[Timing]]:
    with tqdm(total=len(workload), desc=desc) as bar:
        start = time.perf_counter()
        timings = await asyncio.gather(
            *(one(engine, f"{desc}-{i}", p, m, bar) for i, (p, m) in enumerate(workload))
        )
        return time.perf_counter() - start, list(timings)


async def run_sequential(engine: AsyncEngine, workload: list[tuple[list[int], int]]) -> tuple[float, list[Timing]]:
    timings = []
    with tqdm(total=len(workload), desc="one at a time") as bar:
        start = time.perf_counter()
        for i, (p, m) in enumerate(workload):
            timings.append(await one(engine, f"seq-{i}", p, m, bar))
        return time.perf_counter() - start, timings


def summarize(elapsed: float, timings: list[Timing], workload: list[tuple[list[int], int]]) -> dict:
    out_tokens = sum(t.output_tokens for t in timings)
    prompt_tokens = sum(len(p) for p, _ in workload)
    return {
        "elapsed_s": round(elapsed, 2),
        "output_tokens": out_tokens,
        "output_tokens_per_s": round(out_tokens / elapsed, 2),
        "total_tokens_per_s": round((out_tokens + prompt_tokens) / elapsed, 2),
        "tpot_ms": ms_stats([t.tpot for t in timings if t.tpot is not None]),
        "ttft_ms": ms_stats([t.ttft for t in timings]),
    }


async def main_async(args: argparse.Namespace) -> None:
    # Prefix caching off by default: the sequential pass reuses the batched pass's prompts,
    # and cached prompts would flatter it.
    config = EngineConfig(args.model, dtype=args.dtype, device=args.device,
                          max_num_seqs=args.num_requests, max_model_len=args.max_model_len,
                          enable_prefix_caching=args.prefix_caching)
    engine = AsyncEngine(config)
    workload = make_workload(args, engine.core.model_config.vocab_size)
    await run_batched(engine, workload[:2], "warm-up")
    batched = summarize(*await run_batched(engine, workload, "batched"), workload)
    if args.skip_sequential:
        sequential = None
    else:
        sequential = summarize(*await run_sequential(engine, workload), workload)
    await engine.shutdown()
    record = {
        "benchmark": "throughput", "model": args.model, "dtype": args.dtype,
        "num_requests": args.num_requests, "prompt_len": args.prompt_len,
        "output_len": args.output_len, "seed": args.seed, "prefix_caching": args.prefix_caching,
        "batched": batched, "sequential": sequential,
        "speedup_output_tokens_per_s": (
            round(batched["output_tokens_per_s"] / sequential["output_tokens_per_s"], 2)
            if sequential else None
        ),
    }
    path = save("throughput", record)
    print(f"batched:    {batched}")
    print(f"sequential: {sequential}")
    print(f"speedup (output tokens/s): {record['speedup_output_tokens_per_s']}")
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-requests", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, nargs=2, default=[16, 256], metavar=("MIN", "MAX"))
    parser.add_argument("--output-len", type=int, nargs=2, default=[16, 128], metavar=("MIN", "MAX"))
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--prefix-caching", action="store_true", help="enable the prefix cache")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
