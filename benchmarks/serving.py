"""Load the HTTP server and measure what clients see; compare with the offline engine.

Starts `python -m serving` on a loopback port (or uses --url), sends seeded random
requests (token-id prompts to /v1/completions, streamed, greedy, ignore_eos so every
request produces exactly its output length) at a fixed concurrency or request rate, and
reports TTFT, inter-token latency (ITL), time per output token (TPOT), requests/s and
output tokens/s. With --compare-offline it then runs the same requests through the
offline LLM in a fresh process (after the server is gone) for the HTTP layer's overhead.

    python -m benchmarks.serving --concurrency 1 8 32 --num-requests 32 --compare-offline
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import aiohttp
from tqdm import tqdm

from benchmarks.common import ms_stats, save


@dataclass
class Result:
    ttft: float
    latency: float
    output_tokens: int
    chunk_times: list[float] = field(default_factory=list)


def workload(n: int, seed: int, prompt_len: list[int], output_len: list[int], vocab: int) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [([rng.randrange(100, vocab) for _ in range(rng.randint(*prompt_len))],
             rng.randint(*output_len)) for _ in range(n)]


async def stream_one(session: aiohttp.ClientSession, url: str, path: str, body: dict,
                     headers: dict[str, str] | None = None) -> Result:
    """One streamed request (chat or completions): when each text chunk arrived, and the
    completion tokens the usage chunk reports."""
    start = time.perf_counter()
    times: list[float] = []
    tokens = 0
    async with session.post(f"{url}{path}", json=body, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
        async for line in resp.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("text") or
                            (choices[0].get("delta") or {}).get("content")):
                times.append(time.perf_counter())
    end = time.perf_counter()
    ttft = (times[0] if times else end) - start
    return Result(ttft, end - start, tokens or len(times), times)


async def one(session: aiohttp.ClientSession, url: str, model: str, prompt: list[int], max_tokens: int) -> Result:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    return await stream_one(session, url, "/v1/completions", body)


async def run_load(url: str, model: str, requests: list[tuple[list[int], int]], concurrency: int,
                   rate: float | None, seed: int) -> tuple[float, list[Result]]:
    limit = asyncio.Semaphore(concurrency)
    rng = random.Random(seed)
    bar = tqdm(total=len(requests), desc=f"concurrency {concurrency}")

    async def guarded(session: aiohttp.ClientSession, delay: float, prompt: list[int], n: int) -> Result:
        await asyncio.sleep(delay)
        async with limit:
            result = await one(session, url, model, prompt, n)
        bar.update(1)
        return result

    delays, t = [], 0.0
    for _ in requests:  # Poisson arrivals when a rate is given, else all at once
        delays.append(t)
        t += rng.expovariate(rate) if rate else 0.0
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.perf_counter()
        results = await asyncio.gather(
            *(guarded(session, d, p, n) for d, (p, n) in zip(delays, requests, strict=True))
        )
        elapsed = time.perf_counter() - start
    bar.close()
    return elapsed, list(results)


def summarize(elapsed: float, results: list[Result]) -> dict:
    itl = [b - a for r in results for a, b in zip(r.chunk_times, r.chunk_times[1:])]
    tpot = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in results if r.output_tokens > 1]
    out = sum(r.output_tokens for r in results)
    return {"elapsed_s": round(elapsed, 2), "requests_per_s": round(len(results) / elapsed, 3),
            "output_tokens": out, "output_tokens_per_s": round(out / elapsed, 2),
            "ttft_ms": ms_stats([r.ttft for r in results]), "itl_ms": ms_stats(itl),
            "tpot_ms": ms_stats(tpot)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_healthy(url: str, proc: subprocess.Popen) -> None:
    async with aiohttp.ClientSession() as session:
        while proc.poll() is None:
            try:
                async with session.get(f"{url}/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("the server exited before it was ready")


OFFLINE = """
import json, sys, time
from engine import LLM, SamplingParams
args = json.loads(sys.argv[1])
llm = LLM(args["model"], max_model_len=args["max_model_len"], max_num_seqs=args["max_num_seqs"])
reqs = args["requests"]
params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for _, n in reqs]
llm.generate([reqs[0][0]], params[0])  # warm-up
start = time.perf_counter()
outs = llm.generate([p for p, _ in reqs], params)
elapsed = time.perf_counter() - start
print(json.dumps({"elapsed_s": elapsed, "output_tokens": sum(len(o.outputs[0].token_ids) for o in outs)}))
"""


def offline(model: str, requests: list, max_model_len: int, max_num_seqs: int) -> dict:
    arg = json.dumps({"model": model, "requests": requests, "max_model_len": max_model_len,
                      "max_num_seqs": max_num_seqs})
    out = subprocess.run([sys.executable, "-c", OFFLINE, arg], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {**r, "output_tokens_per_s": round(r["output_tokens"] / r["elapsed_s"], 2)}


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "serving", "--model", args.model, "--port", str(port),
         "--max-model-len", str(args.max_model_len), "--max-num-seqs", str(max(args.concurrency)),
         "--log-level", "warning"])


async def load_all(args: argparse.Namespace, url: str, proc: subprocess.Popen | None) -> dict:
    if proc is not None:
        await wait_healthy(url, proc)
    await run_load(url, args.model, workload(2, 999, [8, 8], [4, 4], args.vocab), 2, None, 0)
    runs = {}
    for i, c in enumerate(args.concurrency):
        # A fresh seed per level: no prompt is a prefix-cache hit from an earlier level.
        reqs = workload(args.num_requests, args.seed + i, args.prompt_len, args.output_len, args.vocab)
        runs[str(c)] = {"seed": args.seed + i,
                        **summarize(*await run_load(url, args.model, reqs, c, args.rate, args.seed))}
        print(f"concurrency {c}: {runs[str(c)]}")
    return runs


def run(args: argparse.Namespace) -> None:
    port = free_port()
    url = args.url or f"http://127.0.0.1:{port}"
    proc = None if args.url else start_server(args, port)
    try:
        runs = asyncio.run(load_all(args, url, proc))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    record = {"benchmark": "serving", "model": args.model, "num_requests": args.num_requests,
              "prompt_len": args.prompt_len, "output_len": args.output_len, "rate": args.rate,
              "max_model_len": args.max_model_len, "runs": runs}
    if args.compare_offline:  # the server is gone: the offline run has the machine to itself
        top = max(args.concurrency)
        i = args.concurrency.index(top)
        reqs = workload(args.num_requests, args.seed + i, args.prompt_len, args.output_len, args.vocab)
        record["offline"] = offline(args.model, reqs, args.max_model_len, top)
        record["http_over_offline"] = round(
            runs[str(top)]["output_tokens_per_s"] / record["offline"]["output_tokens_per_s"], 3)
        print(f"offline: {record['offline']}; HTTP / offline = {record['http_over_offline']}")
    print(f"saved {save('serving', record)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--url", help="an already running server (default: start one)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--rate", type=float, help="requests/s (Poisson); default: all at once")
    p.add_argument("--num-requests", type=int, default=32)
    p.add_argument("--prompt-len", type=int, nargs=2, default=[16, 256])
    p.add_argument("--output-len", type=int, nargs=2, default=[16, 128])
    p.add_argument("--vocab", type=int, default=49152, help="token ids are drawn below this")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-offline", action="store_true")
    run(p.parse_args())


if __name__ == "__main__":
    main()
