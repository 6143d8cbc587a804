"""make_app's routes and middlewares, and `python -m serving`, against a tiny random model."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from engine import AsyncEngine, EngineConfig
from serving.app import make_app
from serving.request_keys import MODEL, PROMPT, TOKEN_TIMES, TTFT_S, USAGE
from serving.served import ServedModel
from serving.state import ServerSettings, ServerState
from tests.conftest import REPO, make_tiny_llama

KEY = "sk-test-key"
MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-serving"), "llama31")


@pytest.fixture
async def engine(tiny_path: Path) -> AsyncIterator[AsyncEngine]:
    # One engine per test: its step loop belongs to the event loop of the test that runs it.
    eng = AsyncEngine(EngineConfig(str(tiny_path), kv_cache_bytes=1 << 20))
    yield eng
    await eng.shutdown()


@pytest.fixture
def state(engine: AsyncEngine) -> ServerState:
    served = ServedModel("tiny", engine, engine.core.max_model_len, aliases=["tiny-alias"])
    return ServerState([served], ServerSettings(max_body_bytes=4096))


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("a bug in a handler")


async def fake_completion(request: web.Request) -> web.Response:
    """Leaves what the completion handlers leave for the metrics and access-log middleware."""
    now = time.monotonic()
    request[MODEL] = "tiny"
    request[PROMPT] = "a very private prompt"
    request[USAGE] = {"prompt_tokens": 7, "completion_tokens": 3}
    request[TTFT_S] = 0.02
    request[TOKEN_TIMES] = [now, now + 0.01, now + 0.03]
    return web.json_response({"ok": True})


@pytest.fixture
async def client(aiohttp_client: MakeClient, state: ServerState) -> TestClient:
    app = make_app(state)
    app.router.add_get("/boom", boom)
    app.router.add_post("/v1/fake", fake_completion)
    return await aiohttp_client(app)


async def envelope(resp: Any, status: int) -> dict[str, Any]:
    """Assert the status and PROTOCOL.md's error envelope; return its inner object."""
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


# ---- models and health -------------------------------------------------------------------

async def test_models_list_has_every_name(client: TestClient) -> None:
    resp = await client.get("/v1/models")
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["tiny", "tiny-alias"]
    card = body["data"][0]
    assert card["object"] == "model" and card["owned_by"] == "engine"
    assert isinstance(card["created"], int) and card["max_model_len"] == 256
    assert (await (await client.post("/v1/models")).json()) == body  # LlamaEdge's POST form


async def test_model_get_and_unknown(client: TestClient) -> None:
    resp = await client.get("/v1/models/tiny-alias")
    assert resp.status == 200
    assert (await resp.json())["id"] == "tiny-alias"
    err = await envelope(await client.get("/v1/models/nope"), 404)
    assert err["code"] == "model_not_found" and "`nope`" in err["message"]


async def test_health_and_readiness(client: TestClient, state: ServerState) -> None:
    resp = await client.get("/health")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    state.ready = False
    resp = await client.get("/health")
    await envelope(resp, 503)
    resp = await client.get("/v1/models")
    await envelope(resp, 503)
    assert resp.headers["Retry-After"]
    assert (await client.get("/version")).status == 200


async def test_version(client: TestClient) -> None:
    body = await (await client.get("/version")).json()
    assert isinstance(body["version"], str) and body["version"]


# ---- auth --------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {KEY}", KEY, "Bearer ünï"])
async def test_auth_rejects(client: TestClient, state: ServerState, header: str | None) -> None:
    state.settings.api_key = KEY
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                         ("POST", "/tokenize"), ("GET", "/v1/no-such-path")]:
        err = await envelope(await client.request(method, path, headers=headers), 401)
        assert err["code"] == "invalid_api_key"


async def test_auth_accepts_and_leaves_probes_open(client: TestClient,
                                                   state: ServerState) -> None:
    state.settings.api_key = KEY
    ok = await client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status == 200
    for path in ("/health", "/metrics", "/version"):
        assert (await client.get(path)).status == 200, path


# ---- error envelopes ---------------------------------------------------------------------

async def test_unknown_path_and_wrong_method(client: TestClient) -> None:
    err = await envelope(await client.get("/v1/nothing-here"), 404)
    assert err["type"] == "invalid_request_error"
    resp = await client.get("/v1/chat/completions")
    await envelope(resp, 405)
    assert "POST" in resp.headers["Allow"]
    await envelope(await client.delete("/v1/models"), 405)


async def test_body_too_large(client: TestClient) -> None:
    big = json.dumps({"model": "tiny", "prompt": "x" * 5000})
    await envelope(await client.post("/tokenize", data=big), 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: caught while reading
        for _ in range(10):
            yield b"x" * 1000

    await envelope(await client.post("/tokenize", data=chunks(),
                                      headers={"Content-Type": "application/json"}), 413)
    assert (await client.get("/v1/models")).status == 200


async def test_unhandled_exception_is_500_and_server_keeps_serving(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="serving.errors"):
        resp = await client.get("/boom", headers={"X-Request-Id": "req-42"})
        err = await envelope(resp, 500)
    assert err["type"] == "server_error" and "req-42" in err["message"]
    assert "a bug in a handler" not in err["message"]  # internals stay in the log
    assert any("req-42" in r.getMessage() and r.exc_info for r in caplog.records)
    assert (await client.get("/v1/models")).status == 200


# ---- tokenize / detokenize ---------------------------------------------------------------

async def test_tokenize_detokenize_round_trip(client: TestClient) -> None:
    text = "The capital of France is Paris."
    resp = await client.post("/tokenize", json={"model": "tiny-alias", "prompt": text})
    assert resp.status == 200
    body = await resp.json()
    assert body["count"] == len(body["tokens"]) > 0 and body["max_model_len"] == 256
    resp = await client.post("/detokenize", json={"model": "tiny", "tokens": body["tokens"]})
    assert resp.status == 200 and await resp.json() == {"prompt": text}


@pytest.mark.skipif(not hasattr(AsyncEngine, "apply_chat_template"),
                    reason="needs AsyncEngine.apply_chat_template")
async def test_tokenize_messages(client: TestClient) -> None:
    messages = [{"role": "user", "content": "Hello"}]
    body = await (await client.post("/tokenize", json={"model": "tiny",
                                                       "messages": messages})).json()
    text = await (await client.post("/detokenize", json={"model": "tiny",
                                                         "tokens": body["tokens"]})).json()
    assert text["prompt"].endswith("<|im_start|>assistant\n") and "Hello" in text["prompt"]


@pytest.mark.parametrize(("path", "body", "status", "param"), [
    ("/tokenize", {"model": "tiny"}, 400, "prompt"),
    ("/tokenize", {"model": "tiny", "prompt": "a", "messages": []}, 400, "prompt"),
    ("/tokenize", {"model": "tiny", "prompt": 5}, 400, "prompt"),
    ("/tokenize", {"model": "tiny", "prompt": "a", "bogus": 1}, 400, "bogus"),
    ("/tokenize", {"model": "nope", "prompt": "a"}, 404, "model"),
    ("/detokenize", {"model": "tiny", "tokens": [1, 100000]}, 400, "tokens"),
    ("/detokenize", {"model": "tiny", "tokens": ["1"]}, 400, "tokens"),
])
async def test_tokenize_errors(client: TestClient, path: str, body: dict[str, Any],
                               status: int, param: str) -> None:
    err = await envelope(await client.post(path, json=body), status)
    assert err["param"] == param


async def test_tokenize_malformed_json(client: TestClient) -> None:
    err = await envelope(await client.post("/tokenize", data="{'model': False,}", headers={
        "Content-Type": "application/json"}), 400)
    assert "could not parse the JSON" in err["message"]


# ---- metrics and access log --------------------------------------------------------------

def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not want and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_move(client: TestClient) -> None:
    before = await (await client.get("/metrics")).text()
    await client.get("/v1/models")
    await client.get("/v1/models/nope")
    assert (await client.post("/v1/fake")).status == 200
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    after = await resp.text()
    requests = "engine_http_requests_total"
    for endpoint, status in [("/v1/models", "200"), ("/v1/models/{model_id}", "404")]:
        assert sample(after, requests, endpoint=endpoint, status=status) == \
            sample(before, requests, endpoint=endpoint, status=status) + 1
    assert sample(after, "engine_prompt_tokens_total", model="tiny") == 7
    assert sample(after, "engine_generation_tokens_total", model="tiny") == 3
    assert sample(after, "engine_time_to_first_token_seconds_count", model="tiny") == 1
    assert sample(after, "engine_time_per_output_token_seconds_count", model="tiny") == 2
    for gauge in ("engine_num_requests_running", "engine_num_requests_waiting",
                  "engine_kv_cache_usage_ratio", "engine_spec_decode_draft_tokens",
                  "engine_spec_decode_accepted_tokens"):
        assert sample(after, gauge, model="tiny") == 0
        assert f'{gauge}{{model="tiny"}}' in after


async def test_client_disconnect_is_counted_as_499(aiohttp_client: MakeClient,
                                                   state: ServerState) -> None:
    app = make_app(state)
    started = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(30)
        return web.json_response({})

    app.router.add_get("/slow", slow)
    # As `python -m serving` runs it: a closed connection cancels its handler.
    client = await aiohttp_client(app, server_kwargs={"handler_cancellation": True})
    call = asyncio.create_task(client.get("/slow"))
    await started.wait()
    call.cancel()
    for _ in range(100):
        text = await (await client.get("/metrics")).text()
        if sample(text, "engine_http_requests_total", endpoint="/slow", status="499") == 1:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the cancelled request was not counted")


async def test_access_log_line_and_prompt_privacy(client: TestClient, state: ServerState,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="serving.access"):
        resp = await client.post("/v1/fake", headers={"X-Request-Id": "abc-1"})
    assert resp.headers["X-Request-Id"] == "abc-1"
    lines = [r.getMessage() for r in caplog.records if r.name == "serving.access"]
    assert len(lines) == 1
    assert lines[0].startswith("abc-1 POST /v1/fake 200 prompt_tokens=7 completion_tokens=3")
    assert "private" not in lines[0]
    caplog.clear()
    state.settings.log_prompts = True
    with caplog.at_level(logging.INFO, logger="serving.access"):
        await client.post("/v1/fake")
    assert any("a very private prompt" in r.getMessage() for r in caplog.records)


# ---- the command line --------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def run_cli(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "ENGINE_API_KEY": ""}
    return subprocess.Popen([sys.executable, "-m", "serving", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_healthy(proc: subprocess.Popen[str], base: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited early: {proc.communicate()[1]}")
        try:
            if get_json(f"{base}/health")[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        time.sleep(0.2)
    pytest.fail("server never became healthy")


def test_cli_serves_and_stops_on_sigterm(tiny_path: Path) -> None:
    port = free_port()
    proc = run_cli("--model", str(tiny_path), "--served-model-name", "tiny,tiny-alias",
                   "--port", str(port), "--kv-cache-bytes", "1MiB", "--no-embedding-model")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(proc, base)
        status, body = get_json(f"{base}/v1/models")
        assert status == 200 and [m["id"] for m in body["data"]] == ["tiny", "tiny-alias"]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "KV cache" in stderr and "parameters" in stderr


@pytest.mark.parametrize("args", [
    ["--model", "/no/such/model-dir"],
    ["--model", "{tiny}", "--fallback", "tiny=missing"],
    ["--model", "{tiny}", "--served-model-name", "a", "--served-model-name", "b"],
    ["--model", "{tiny}", "--dtype", "int3"],
])
def test_cli_bad_input_exits_2(tiny_path: Path, args: list[str], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m serving`'s main, in-process (the exit code is its return value): a
    subprocess per case would spend seconds importing torch to print one line."""
    from serving.__main__ import main

    args = [a.format(tiny=tiny_path) for a in args]
    data = tmp_path / "data"
    code = main([*args, "--port", str(free_port()), "--kv-cache-bytes", "1MiB",
                 "--data-dir", str(data)])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    if args[1].startswith("/no/such"):
        assert "/no/such/model-dir" in errors[0]
    assert not data.exists()  # a failed start creates nothing


def test_missing_model_is_reported_even_when_the_data_dir_is_locked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Another server holds the data directory: the missing model is still what is reported,
    and nothing new is created there."""
    from serving.__main__ import main
    from serving.retrieval.service import RetrievalSettings, open_vector_store

    data = tmp_path / "data"
    store = open_vector_store(RetrievalSettings(data_dir=data))
    try:
        before = sorted(p.relative_to(data) for p in data.rglob("*"))
        code = main(["--model", str(tmp_path / "does-not-exist"), "--port", str(free_port()),
                     "--data-dir", str(data)])
        stderr = capsys.readouterr().err
        assert code == 2, stderr
        assert "does-not-exist" in stderr and "retrieval store" not in stderr
        assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    finally:
        asyncio.run(store.close())
