"""Fixtures for the HTTP server tests: a tiny random model, the server in-process, helpers.

The server is built the way the CLI builds it (ServerState -> make_app) and driven through
pytest-aiohttp's test client. Expected outputs never come from the server itself: they come
from the offline engine (`engine.LLM`) on the same checkpoint, from the tokenizer, or from
the protocol's invariants.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine import LLM, AsyncEngine, EngineConfig, SamplingParams
from tests.conftest import make_tiny_llama, smollm2_path
from tests.engine.embedding.conftest import make_tiny_bert
from tests.serving.servers import API_KEY, SMOL, Server, start_server, stop_server

MODEL = "tiny"
MAX_LEN = 256
AUTH = {"Authorization": f"Bearer {API_KEY}"}
HELLO = [{"role": "user", "content": "Hello there"}]
EOS_ID = 2  # <|im_end|> in the tiny checkpoint's tokenizer (tests/conftest.py)


# ---- the model and its offline reference -----------------------------------------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("serving") / "tiny", "llama31")


class Reference:
    """The offline engine on the same checkpoint: what the server must reproduce."""

    def __init__(self, path: Path) -> None:
        self.llm = LLM(str(path), max_model_len=MAX_LEN)
        self.tokenizer = self.llm.tokenizer

    def chat(self, messages: list[dict[str, Any]], **params: Any):
        """The RequestOutput of one conversation."""
        return self.llm.chat(messages, SamplingParams(**params))[0]

    def generate(self, prompt: str | list[int], **params: Any):
        return self.llm.generate([prompt], SamplingParams(**params))[0]

    def chat_prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        text = self.llm.apply_chat_template(messages)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def word_tokens(self, count: int) -> list[int]:
        """Token ids that decode to plain ASCII words (letters only, 2+ characters)."""
        found = []
        for i in range(3, self.tokenizer.vocab_size):
            text = self.tokenizer.decode([i])
            if text.isascii() and text.isalpha() and len(text) >= 2:
                found.append(i)
        assert len(found) >= count, "the tiny tokenizer has too few word tokens"
        return found[:count]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("serving-bert") / "tiny-bert")


@pytest.fixture(scope="session")
def ref(tiny_model: Path) -> Reference:
    return Reference(tiny_model)


# ---- the server in-process ---------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: Any
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Stream:
    """A parsed SSE response: its JSON events (without the final [DONE])."""

    status: int
    headers: Any
    text: str
    events: list[dict[str, Any]] = field(default_factory=list)


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Check the framing PROTOCOL.md fixes and return the JSON payloads in order."""
    assert text.endswith("data: [DONE]\n\n"), f"stream does not end with [DONE]: {text[-200:]!r}"
    blocks = text.split("\n\n")
    assert blocks[-1] == "", "bytes after the final event"
    blocks = blocks[:-1]
    assert blocks[-1] == "data: [DONE]"
    events = []
    for block in blocks[:-1]:
        for line in block.split("\n"):
            assert not line.startswith("event:"), f"unexpected event: line {line!r}"
        assert block.startswith("data: "), f"event is not a data: line: {block!r}"
        assert "\n" not in block, f"one event spans several lines: {block!r}"
        payload = block[len("data: "):]
        assert payload != "[DONE]", "[DONE] before the end of the stream"
        events.append(json.loads(payload))
    return events


class Api:
    """A thin client over pytest-aiohttp's TestClient that sends the API key by default."""

    def __init__(self, client: Any, engine: AsyncEngine, state: Any) -> None:
        self.client = client
        self.engine = engine
        self.state = state

    @staticmethod
    def _headers(key: str | None, headers: dict[str, str] | None) -> dict[str, str]:
        out = {} if key is None else {"Authorization": f"Bearer {key}"}
        out.update(headers or {})
        return out

    async def request(self, method: str, path: str, body: Any = None, *, raw: str | bytes | None = None,
                      key: str | None = API_KEY, headers: dict[str, str] | None = None) -> Response:
        hdrs = self._headers(key, headers)
        if raw is not None:
            hdrs.setdefault("Content-Type", "application/json")
            resp = await self.client.request(method, path, data=raw, headers=hdrs)
        elif body is not None:
            resp = await self.client.request(method, path, json=body, headers=hdrs)
        else:
            resp = await self.client.request(method, path, headers=hdrs)
        async with resp:
            return Response(resp.status, resp.headers, await resp.text())

    async def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return await self.request("POST", path, body, **kw)

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def chat(self, **body: Any) -> Response:
        body.setdefault("model", MODEL)
        return await self.post("/v1/chat/completions", body)

    async def completion(self, **body: Any) -> Response:
        body.setdefault("model", MODEL)
        return await self.post("/v1/completions", body)

    async def stream(self, path: str, body: dict[str, Any]) -> Stream:
        body = {"model": MODEL, **body, "stream": True}
        async with self.client.post(path, json=body, headers=AUTH) as resp:
            text = await resp.text()
            out = Stream(resp.status, resp.headers, text)
        if out.status == 200:
            out.events = parse_sse(text)
        return out


async def make_api(aiohttp_client: Any, engine: AsyncEngine, **settings: Any) -> Api:
    from serving.app import make_app
    from serving.served import ServedModel
    from serving.state import ServerSettings, ServerState

    settings.setdefault("api_key", API_KEY)
    state = ServerState([ServedModel(MODEL, engine, max_model_len=engine.max_model_len)],
                        ServerSettings(**settings))
    client = await aiohttp_client(make_app(state))
    return Api(client, engine, state)


@pytest.fixture
async def engine(tiny_model: Path) -> AsyncIterator[AsyncEngine]:
    """A fresh engine, for tests that configure it or count what it does."""
    eng = AsyncEngine(EngineConfig(str(tiny_model), max_model_len=MAX_LEN))
    yield eng
    await eng.shutdown()


@pytest.fixture(scope="session")
async def shared_engine(tiny_model: Path) -> AsyncIterator[AsyncEngine]:
    eng = AsyncEngine(EngineConfig(str(tiny_model), max_model_len=MAX_LEN))
    yield eng
    await eng.shutdown()


LONG = 2048  # room for an injected tool prompt (~800 tokens of the tiny tokenizer)


@pytest.fixture(scope="session")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama-3.1-shaped model with a LONG context, for tool-calling tests."""
    path = make_tiny_llama(tmp_path_factory.mktemp("long") / "tiny", "llama31")
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = LONG  # random weights do not care how far rope goes
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="session")
async def long_engine(long_model: Path) -> AsyncIterator[AsyncEngine]:
    eng = AsyncEngine(EngineConfig(str(long_model), max_model_len=LONG))
    yield eng
    await eng.shutdown()


@pytest.fixture
async def api(aiohttp_client: Any, shared_engine: AsyncEngine) -> Api:
    """The server over the session's engine. Every request a test makes ends (or is
    aborted) before the test does, which each use checks first: outputs do not depend on
    what ran before (seeded or greedy sampling, batch-invariant kernels)."""
    await wait_idle(shared_engine)
    if shared_engine.num_active or shared_engine.core.has_unfinished():
        raise RuntimeError("a previous test left requests running in the shared engine")
    return await make_api(aiohttp_client, shared_engine)


# ---- assertions shared by the modules ----------------------------------------------------


def assert_error(resp: Response, status: int, *, param: Any = ..., code: Any = ...,
                 type: str | None = None) -> dict[str, Any]:
    """The OpenAI error envelope, with the given status (and param/code/type when given)."""
    assert resp.status == status, f"expected {status}, got {resp.status}: {resp.text[:500]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err
    if param is not ...:
        assert err["param"] == param, err
    if code is not ...:
        assert err["code"] == code, err
    if type is not None:
        assert err["type"] == type, err
    return err


def assert_usage(usage: dict[str, Any], prompt_tokens: int, completion_tokens: int) -> None:
    assert usage["prompt_tokens"] == prompt_tokens, usage
    assert usage["completion_tokens"] == completion_tokens, usage
    assert usage["total_tokens"] == prompt_tokens + completion_tokens, usage


def assert_created_now(created: Any) -> None:
    assert isinstance(created, int) and not isinstance(created, bool)
    assert abs(created - time.time()) < 3600, created  # a unix time in seconds, not ms


async def wait_idle(engine: AsyncEngine, polls: int = 400) -> None:
    """Let pending aborts land: the engine has no stream and no unfinished request."""
    import asyncio

    for _ in range(polls):
        if engine.num_active == 0 and not engine.core.has_unfinished():
            return
        await asyncio.sleep(0.025)


# ---- `python -m serving` subprocesses, one of each kind per session ------------------------


@pytest.fixture(scope="session")
def tiny_server(tiny_model: Path, tiny_bert_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The tiny chat model with the tiny BERT as its embedding model (retrieval on)."""
    from tests.serving.embedding_support import ENCODER

    tmp = tmp_path_factory.mktemp("tiny-server")
    server = start_server(["--model", str(tiny_model), "--served-model-name", MODEL,
                           "--max-model-len", str(MAX_LEN), "--embedding-model",
                           str(tiny_bert_dir), "--embedding-model-name", ENCODER,
                           "--data-dir", str(tmp / "data")], tmp / "server.log")
    yield server
    assert stop_server(server) == 0, server.log_tail()


@pytest.fixture(scope="session")
def smol_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real SmolLM2 (fetched by python -m weights.fetch), without an embedding model.

    `--seed 0`: requests that send no seed (the API documents' examples) still draw their
    samples from a fixed stream, so how long their answers run, and the suite's time, do
    not change from one run to the next."""
    path = smollm2_path()
    if not path.exists():
        pytest.skip(f"the real model is not fetched ({path}); run python -m weights.fetch")
    tmp = tmp_path_factory.mktemp("smol-server")
    server = start_server(["--model", str(path), "--served-model-name", SMOL,
                           "--max-model-len", "512", "--no-embedding-model", "--seed", "0",
                           "--data-dir", str(tmp / "data")], tmp / "server.log")
    yield server
    assert stop_server(server) == 0, server.log_tail()
