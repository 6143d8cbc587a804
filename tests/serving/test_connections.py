"""The server over real sockets, as `python -m serving` runs it (serving.connections):
what its HTTP parser refuses is answered in the OpenAI envelope."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from engine import AsyncEngine
from serving.app import make_app
from serving.connections import make_runner
from serving.served import ServedModel
from serving.state import ServerSettings, ServerState
from tests.serving.conftest import MAX_LEN, MODEL


@dataclass
class Served:
    port: int
    settings: ServerSettings


async def start(engine: AsyncEngine, **settings: Any) -> tuple[web.AppRunner, Served]:
    config = ServerSettings(**settings)
    state = ServerState([ServedModel(MODEL, engine, max_model_len=MAX_LEN)], config)
    runner = make_runner(make_app(state), config, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, Served(port, config)


@pytest.fixture
async def served(shared_engine: AsyncEngine) -> AsyncIterator[Served]:
    runner, out = await start(shared_engine)
    yield out
    await runner.cleanup()


async def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, v in
               (line.split(":", 1) for line in lines[1:])}
    return status, headers, body


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["not http", "bad version", "bad header", "bad length", "line too long"])
async def test_malformed_http_gets_the_envelope(served: Served, data: bytes) -> None:
    status, headers, body = split_response(await exchange(served.port, data))
    assert status == 400
    assert headers["content-type"].startswith("application/json"), headers
    err = json.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "bad_http_request"
    assert err["message"].startswith("Malformed HTTP request")
    # and the server goes on serving
    ok = await exchange(served.port, b"GET /health HTTP/1.1\r\nHost: x\r\n"
                                      b"Connection: close\r\n\r\n")
    assert split_response(ok)[0] == 200
