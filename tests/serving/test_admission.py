"""What the server admits: nothing that could only end early or starve other clients.

- A KV cache too small for the model's context caps the context (the model card and every
  check use the cap), so a request that could never fit is a 400 with both numbers up front,
  never a 200 cut short by the cache.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from engine import AsyncEngine, EngineConfig
from tests.serving.conftest import assert_error, make_api

KV_BYTES_PER_TOKEN = 384  # the tiny llama31 checkpoint in float32: 2 x 3 layers x 2 x 8 x 4
TINY_CACHE = 4 * 16 * KV_BYTES_PER_TOKEN  # 4 blocks of 16: 64 tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
