"""What the server admits: nothing that could only end early or starve other clients.

- Waiting work is counted in sequences (prompts x n), against --max-waiting-requests; one
  request is capped in prompts (--max-prompts-per-request); the prompts of one request are
  scheduled in turn with other requests', so many prompts cannot lock a second client out.
- A KV cache too small for the model's context caps the context (the model card and every
  check use the cap), so a request that could never fit is a 400 with both numbers up front,
  never a 200 cut short by the cache.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine import AsyncEngine, EngineConfig
from tests.serving.conftest import AUTH, MAX_LEN, MODEL, Api, assert_error, make_api

KV_BYTES_PER_TOKEN = 384  # the tiny llama31 checkpoint in float32: 2 x 3 layers x 2 x 8 x 4
TINY_CACHE = 4 * 16 * KV_BYTES_PER_TOKEN  # 4 blocks of 16: 64 tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def two_slot_engine(tiny_model: Path) -> AsyncIterator[AsyncEngine]:
    """Two sequences run at a time: everything else waits."""
    eng = AsyncEngine(EngineConfig(str(tiny_model), max_model_len=MAX_LEN, max_num_seqs=2))
    yield eng
    await eng.shutdown()


async def stream_events(api: Api, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """A streamed completion's JSON events, as they arrive."""
    body = {"model": MODEL, **body, "stream": True}
    async with api.client.post("/v1/completions", json=body, headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data: {"):
                yield json.loads(line[len("data: "):])


async def wait_for(condition: Any, what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_a_request_with_many_prompts_does_not_lock_out_a_second_client(
        aiohttp_client: Any, two_slot_engine: AsyncEngine) -> None:
    """40 prompts in one request, two slots: a second client's one prompt runs after at
    most a turn of the first's, not after all 40 (first come, first served per prompt)."""
    api = await make_api(aiohttp_client, two_slot_engine)
    finished = 0
    started = asyncio.Event()

    async def many() -> None:
        nonlocal finished
        prompts = [f"prompt number {i}" for i in range(40)]
        async for event in stream_events(api, {"prompt": prompts, "max_tokens": 8,
                                               "ignore_eos": True, "temperature": 0}):
            started.set()
            finished += sum(1 for c in event["choices"] if c["finish_reason"] is not None)

    first = asyncio.create_task(many())
    await asyncio.wait_for(started.wait(), 60)
    second = await api.completion(prompt="Hello", max_tokens=8, ignore_eos=True)
    finished_before_second = finished
    await first
    assert second.status == 200, second.text
    assert second.json["usage"]["completion_tokens"] == 8
    assert finished == 40
    assert finished_before_second <= 8, finished_before_second


async def test_waiting_work_is_counted_per_sequence(
        aiohttp_client: Any, two_slot_engine: AsyncEngine) -> None:
    api = await make_api(aiohttp_client, two_slot_engine, max_waiting_requests=2)
    running = asyncio.Event()

    async def occupy_both_slots() -> None:
        async for _ in stream_events(api, {"prompt": "Hi", "n": 2, "max_tokens": 200,
                                           "ignore_eos": True}):
            running.set()

    blocker = asyncio.create_task(occupy_both_slots())
    await asyncio.wait_for(running.wait(), 60)
    # One prompt with n=2 waits: two sequences, the whole queue.
    waiting = asyncio.create_task(api.completion(prompt="Hello", n=2, max_tokens=2))
    await wait_for(lambda: two_slot_engine.stats().num_waiting >= 1, "the n=2 request waits")
    assert two_slot_engine.stats().num_waiting == 2
    full = await api.completion(prompt="Hello", max_tokens=2)
    assert_error(full, 503, code="server_overloaded")
    assert "Retry-After" in full.headers
    # Three prompts can never fit a queue of two, however empty it is: a 400, not a 503.
    err = assert_error(await api.completion(prompt=["a", "b", "c"], max_tokens=2), 400,
                       param="prompt")
    assert "3 sequences" in err["message"] and "at most 2" in err["message"]
    blocker.cancel()
    await asyncio.gather(blocker, return_exceptions=True)
    assert (await waiting).status == 200


async def test_prompts_per_request_are_capped(aiohttp_client: Any,
                                              shared_engine: AsyncEngine) -> None:
    api = await make_api(aiohttp_client, shared_engine, max_prompts_per_request=4)
    err = assert_error(await api.completion(prompt=["a"] * 5, max_tokens=1), 400,
                       param="prompt")
    assert "5 prompts" in err["message"] and "at most 4" in err["message"]
    err = assert_error(await api.completion(prompt=[[5, 6]] * 5, max_tokens=1), 400,
                       param="prompt")
    ok = await api.completion(prompt=["a"] * 4, max_tokens=1)
    assert ok.status == 200 and len(ok.json["choices"]) == 4


@pytest.fixture
async def tiny_cache_engine(tiny_model: Path) -> Any:
    eng = AsyncEngine(EngineConfig(str(tiny_model), kv_cache_bytes=TINY_CACHE))
    yield eng
    await eng.shutdown()


async def test_a_request_the_kv_cache_can_never_hold_is_a_400_with_both_numbers(
        aiohttp_client: Any, tiny_cache_engine: AsyncEngine) -> None:
    api = await make_api(aiohttp_client, tiny_cache_engine)
    assert tiny_cache_engine.max_model_len == 64
    prompt = [5, 6, 7, 8, 9, 10]
    resp = await api.completion(prompt=prompt, max_tokens=200, ignore_eos=True)
    err = assert_error(resp, 400, param="prompt", code="context_length_exceeded")
    assert "maximum context length is 64 tokens" in err["message"]
    assert "you requested 206 tokens" in err["message"]
    # What fits runs whole: every token asked for, however the cache is shared.
    ok = await api.completion(prompt=prompt, max_tokens=58, ignore_eos=True, temperature=0)
    assert ok.status == 200, ok.text
    assert ok.json["usage"]["completion_tokens"] == 58
    assert ok.json["choices"][0]["finish_reason"] == "length"
    models = (await api.get("/v1/models")).json["data"]
    assert models[0]["max_model_len"] == 64


def test_cli_refuses_a_max_model_len_the_kv_cache_cannot_hold(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from serving.__main__ import main

    # Should it start serving instead, a SIGINT stops it (exit 0) rather than hang the run.
    guard = threading.Timer(60, os.kill, (os.getpid(), signal.SIGINT))
    guard.start()
    try:
        code = main(["--model", str(tiny_model), "--max-model-len", "256", "--kv-cache-bytes",
                     str(TINY_CACHE), "--no-embedding-model", "--port", str(free_port()),
                     "--data-dir", str(tmp_path / "data")])
    finally:
        guard.cancel()
    err = capsys.readouterr().err
    assert code == 2, err
    assert "max_model_len 256 does not fit the KV cache, which holds 64 tokens" in err
