"""Nothing slow runs on the event loop (issue 14, item 1): while grammars compile or a huge
prompt is tokenized, /health and a small chat stream keep answering.

The checks are orderings (the small request is answered while the slow one is still being
prepared), with generous bounds on top; sizes are chosen so that the slow work takes about
a second on the tiny model's tokenizer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from engine import AsyncEngine
from tests.serving.conftest import HELLO, MODEL, Api, make_api

ENUM_SIZE = 14_000  # a distinct enum this long takes ~2.5 s to compile for the tiny vocab
PROMPT_CHARS = 2_000_000  # ~2.3 s to tokenize with the tiny tokenizer
HEALTH_BOUND_S = 1.0  # /health answers in milliseconds; a second is generous


def enum_format(tag: int) -> dict[str, Any]:
    schema = {"type": "object", "required": ["v"], "properties": {
        "v": {"type": "string", "enum": [f"v{tag}-{i}" for i in range(ENUM_SIZE)]}}}
    return {"type": "json_schema", "json_schema": {"name": f"s{tag}", "schema": schema}}


async def timed(coro: Any) -> tuple[Any, float]:
    """The result of `coro` and the monotonic time it finished at."""
    out = await coro
    return out, time.monotonic()


async def health_latency(api: Api) -> float:
    start = time.monotonic()
    resp = await api.get("/health")
    assert resp.status == 200
    return time.monotonic() - start


async def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the slow requests"
        await asyncio.sleep(0.01)


async def test_slow_grammars_do_not_hold_up_others(aiohttp_client: Any,
                                                   engine: AsyncEngine) -> None:
    api = await make_api(aiohttp_client, engine)
    slow = [asyncio.create_task(timed(api.chat(messages=HELLO, max_tokens=1,
                                               response_format=enum_format(i))))
            for i in range(3)]
    # All three are past parsing and waiting on their grammars.
    await wait_until(lambda: engine.stats().num_waiting >= 3 or any(t.done() for t in slow))
    assert not any(t.done() for t in slow), "the grammars compiled too fast to test anything"
    health = [await health_latency(api) for _ in range(3)]
    stream, stream_done = await timed(api.stream("/v1/chat/completions",
                                                 {"messages": HELLO, "max_tokens": 4}))
    assert stream.status == 200 and stream.events
    slow_done = []
    for task in slow:
        resp, done = await task
        assert resp.status == 200, resp.text
        slow_done.append(done)
    assert max(health) < HEALTH_BOUND_S, health
    # The plain stream did not queue behind the compiles: it ended before any of them did.
    assert stream_done < min(slow_done)


class LoopWatch:
    """The longest the event loop went without running a 10 ms heartbeat. The in-process
    server and this test share one loop, so this is the server's own stall."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task = asyncio.create_task(self._beat())

    async def _beat(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.worst = max(self.worst, now - last)
            last = now

    def stop(self) -> float:
        self._task.cancel()
        return self.worst


PROMPT = "The quick brown fox jumps over the lazy dog. " * (PROMPT_CHARS // 45)


@pytest.mark.parametrize(("path", "body"), [
    ("/tokenize", {"prompt": PROMPT}),
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 1}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}]}),
    ("/v1/embeddings", {"input": PROMPT}),
], ids=["tokenize", "completions", "chat", "embeddings"])
async def test_tokenizing_a_huge_prompt_does_not_stall_the_loop(api: Api, path: str,
                                                                body: dict[str, Any]) -> None:
    watch = LoopWatch()
    big = asyncio.create_task(timed(api.post(path, {"model": MODEL, **body})))
    health = []
    while not big.done():
        health.append(await timed(health_latency(api)))
        await asyncio.sleep(0.05)
    resp, big_done = await big
    worst = watch.stop()
    assert resp.status in (200, 400), resp.text  # too long for the tiny model: a 400
    assert [h for h, done in health if done < big_done], "no /health while it was working"
    assert max(h for h, _ in health) < HEALTH_BOUND_S and worst < HEALTH_BOUND_S, (
        worst, health)
