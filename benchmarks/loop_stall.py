"""How the server answers others while slow requests are prepared (issue 14, item 1).

Starts `python -m serving` (or uses --url) and polls /health every 50 ms while, in turn:
1. N concurrent chat requests carry a JSON schema with a large, distinct enum each (slow to
   check and to compile into a grammar); one second in, a small streamed chat request
   (no grammar, 8 tokens) is sent and timed;
2. one /tokenize request carries a prompt of --prompt-mb megabytes.
Reports the worst and median /health latency during each, and how long the small request
and the slow ones took.

    python -m benchmarks.loop_stall --schemas 3 --enum-size 50000 --prompt-mb 4
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable
from typing import Any

import aiohttp

from benchmarks.common import save
from benchmarks.serving import free_port, wait_healthy


def enum_schema(tag: int, size: int) -> dict[str, Any]:
    return {"type": "object", "properties": {
        "v": {"type": "string", "enum": [f"value-{tag}-{i}" for i in range(size)]}},
        "required": ["v"]}


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    """Seconds until the whole response (streamed or not) has arrived."""
    start = time.perf_counter()
    async with session.post(url, json=body) as resp:
        await resp.read()
        if resp.status >= 500:
            raise RuntimeError(f"HTTP {resp.status}")
    return time.perf_counter() - start


async def poll_health(session: aiohttp.ClientSession, url: str, done: asyncio.Event
                      ) -> list[float]:
    latencies = []
    while not done.is_set():
        start = time.perf_counter()
        async with session.get(f"{url}/health") as resp:
            await resp.read()
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(0.05)
    return latencies


async def while_polling(session: aiohttp.ClientSession, url: str, work: Awaitable[Any]
                        ) -> tuple[Any, dict[str, float]]:
    done = asyncio.Event()
    poller = asyncio.create_task(poll_health(session, url, done))
    await asyncio.sleep(0.2)
    try:
        result = await work
    finally:
        done.set()
    latencies = await poller
    return result, {"health_max_ms": round(max(latencies) * 1000, 1),
                    "health_p50_ms": round(statistics.median(latencies) * 1000, 1),
                    "health_polls": len(latencies)}


async def grammars(session: aiohttp.ClientSession, url: str, model: str, schemas: int,
                   size: int) -> dict[str, Any]:
    chat = f"{url}/v1/chat/completions"
    slow = [asyncio.create_task(post(session, chat, {
        "model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {
            "name": f"s{i}", "schema": enum_schema(i, size)}}})) for i in range(schemas)]
    await asyncio.sleep(1.0)
    small = await post(session, chat, {"model": model, "max_tokens": 8, "stream": True,
                                       "messages": [{"role": "user", "content": "Hello"}]})
    took = await asyncio.gather(*slow)
    return {"small_stream_s": round(small, 2), "slow_requests_s": [round(t, 2) for t in took]}


async def run(url: str, proc: subprocess.Popen | None, args: argparse.Namespace
              ) -> dict[str, Any]:
    if proc is not None:
        await wait_healthy(url, proc)
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        slow, health = await while_polling(session, url, grammars(
            session, url, args.model, args.schemas, args.enum_size))
        record: dict[str, Any] = {"schemas": args.schemas, "enum_size": args.enum_size,
                                  **slow, **health}
        prompt = "The quick brown fox jumps over the lazy dog. " * int(
            args.prompt_mb * 1e6 / 45)
        took, health = await while_polling(session, url, post(
            session, f"{url}/tokenize", {"model": args.model, "prompt": prompt}))
        record["tokenize"] = {"prompt_mb": args.prompt_mb, "took_s": round(took, 2), **health}
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--url", help="an already running server (then --model names its model)")
    p.add_argument("--schemas", type=int, default=3)
    p.add_argument("--enum-size", type=int, default=50000)
    p.add_argument("--prompt-mb", type=float, default=4.0)
    args = p.parse_args()
    port = free_port()
    url = args.url or f"http://127.0.0.1:{port}"
    proc = None
    if not args.url:
        proc = subprocess.Popen([sys.executable, "-m", "serving", "--model", args.model,
                                 "--port", str(port), "--no-embedding-model",
                                 "--log-level", "warning"])
    try:
        record = asyncio.run(run(url, proc, args))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    print(record)
    print("saved", save("loop_stall", record))


if __name__ == "__main__":
    main()
