"""`python -m serving --tensor-parallel-size 2`: chat, completions and streaming answer as
the offline TP=1 engine does; a worker killed mid-request fails its requests with a 500
envelope and the server exits non-zero (3), leaving no process behind."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.processes import child_pids, wait_gone
from tests.serving.conftest import HELLO, MAX_LEN, MODEL, Reference
from tests.serving.servers import Server, start_server, stop_server

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tp_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("tp-server") / "server.log"
    server = start_server(["--model", str(tiny_model), "--served-model-name", MODEL,
                           "--max-model-len", str(MAX_LEN), "--tensor-parallel-size", "2",
                           "--no-embedding-model"], log, env={"ENGINE_TP_TIMEOUT_S": "60"})
    yield server
    stop_server(server)


def answer(client: openai.OpenAI, endpoint: str, stream: bool, **params: Any) -> str:
    if endpoint == "chat":
        out = client.chat.completions.create(model=MODEL, messages=HELLO, stream=stream,
                                             **params)
        if stream:
            return "".join(c.choices[0].delta.content or "" for c in out if c.choices)
        return out.choices[0].message.content or ""
    out = client.completions.create(model=MODEL, prompt=PROMPT, stream=stream, **params)
    if stream:
        return "".join(c.choices[0].text for c in out if c.choices)
    return out.choices[0].text


@pytest.mark.parametrize(("endpoint", "stream"), [("chat", False), ("chat", True),
                                                  ("completions", False),
                                                  ("completions", True)])
@pytest.mark.parametrize("params", [{"temperature": 0}, {"temperature": 0.8, "seed": 7}],
                         ids=["greedy", "seeded"])
def test_answers_match_the_offline_engine(tp_server: Server, ref: Reference, endpoint: str,
                                          stream: bool, params: dict[str, Any]) -> None:
    got = answer(tp_server.client(), endpoint, stream, max_tokens=16, **params)
    want = (ref.chat(HELLO, max_tokens=16, **params) if endpoint == "chat"
            else ref.generate(PROMPT, max_tokens=16, **params))
    assert got == want.outputs[0].text


def test_killed_worker_fails_requests_with_5xx_and_the_server_exits(tp_server: Server) -> None:
    """Last in this module: it ends the server."""
    workers = child_pids(tp_server.proc.pid)
    assert len(workers) == 1  # TP=2: one worker process beside the server
    plain: dict[str, Any] = {}

    def request() -> None:
        plain["status"], plain["body"] = tp_server.http("POST", "/v1/completions", {
            "model": MODEL, "prompt": PROMPT, "max_tokens": 200, "ignore_eos": True})

    thread = threading.Thread(target=request)
    thread.start()
    stream = tp_server.client().completions.create(model=MODEL, prompt=PROMPT, max_tokens=200,
                                                   stream=True, extra_body={"ignore_eos": True})
    events = iter(stream)
    next(events)  # the stream has begun: its request is running
    os.kill(workers[0], signal.SIGKILL)
    with pytest.raises(openai.APIError, match="tensor-parallel worker rank 1"):
        for _ in events:
            pass
    thread.join(timeout=30)
    assert 500 <= plain["status"] < 600, plain
    assert "error" in plain["body"], plain
    assert tp_server.proc.wait(timeout=30) == 3, tp_server.log_tail()
    assert wait_gone(workers)
