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


# ---- slow and idle clients (issue 14, item 8) ------------------------------------------------

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
async def strict(shared_engine: AsyncEngine) -> AsyncIterator[Served]:
    """Small limits, so that the tests wait half a second rather than minutes."""
    runner, out = await start(shared_engine, header_timeout_s=0.5, body_timeout_s=0.5)
    yield out
    await runner.cleanup()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    start_time = asyncio.get_running_loop().time()
    data = await asyncio.wait_for(reader.read(), seconds)
    return data, asyncio.get_running_loop().time() - start_time


@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n"],
                         ids=["idle", "partial headers"])
async def test_a_connection_without_a_whole_head_is_closed(strict: Served, sent: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
    try:
        writer.write(sent)
        data, took = await closed_within(reader, 10.0)
    finally:
        writer.close()
    assert data == b"" and took < 5.0  # closed, and long before a minute


async def test_a_trickle_of_header_bytes_does_not_keep_it_open(strict: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
    loop = asyncio.get_running_loop()
    start_time = loop.time()
    try:
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            if reader.at_eof() or writer.is_closing():
                break
            writer.write(bytes([byte]))
            try:
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.05)
            if loop.time() - start_time > 10:
                break
        data = await asyncio.wait_for(reader.read(), 10.0)
    finally:
        writer.close()
    assert data == b"" and loop.time() - start_time < 5.0


async def test_requests_in_time_keep_their_connection(strict: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
    try:
        for _ in range(3):  # one kept-alive connection, each request well within the bound
            writer.write(HEALTH)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            length = int(split_response(head)[1]["content-length"])
            await reader.readexactly(length)
            assert head.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.1)
    finally:
        writer.close()


async def test_a_slow_body_is_408_and_closed(strict: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
    try:
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 100\r\n\r\n{\"model\": ")
        data, took = await closed_within(reader, 10.0)
    finally:
        writer.close()
    status, headers, body = split_response(data)
    assert status == 408 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert took < 5.0


async def test_connections_past_the_cap_get_503(shared_engine: AsyncEngine) -> None:
    runner, served = await start(shared_engine, max_connections=3)  # idle ones stay open
    held = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(3)]
    await asyncio.sleep(0.1)  # let the server take them
    try:
        status, headers, body = split_response(await exchange(served.port, HEALTH))
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body)["error"]["code"] == "server_overloaded"
    finally:
        for _, writer in held:
            writer.close()
    try:
        for _ in range(50):  # once they are gone, new connections are served again
            await asyncio.sleep(0.05)
            status, _, _ = split_response(await exchange(served.port, b"GET /health HTTP/1.1"
                                                         b"\r\nHost: x\r\nConnection: close"
                                                         b"\r\n\r\n"))
            if status == 200:
                break
        assert status == 200
    finally:
        await runner.cleanup()


def test_flags_set_the_limits() -> None:
    from serving.cli import CLIError, parse_args

    settings = parse_args(["--model", "m", "--header-timeout", "5", "--body-timeout", "7.5",
                           "--max-connections", "9"]).settings
    assert (settings.header_timeout_s, settings.body_timeout_s,
            settings.max_connections) == (5.0, 7.5, 9)
    defaults = parse_args(["--model", "m"]).settings
    assert defaults == ServerSettings(api_key=defaults.api_key, data_dir=defaults.data_dir)
    for flag in ("--header-timeout", "--body-timeout", "--max-connections"):
        with pytest.raises(CLIError, match=flag):
            parse_args(["--model", "m", flag, "0"])
