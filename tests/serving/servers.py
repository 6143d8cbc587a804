"""`python -m serving` as a subprocess, as users run it, and the servers tests share.

A start costs seconds (importing torch, loading the model), so each kind of server starts
once per session: `tiny_server` (the tiny random model with a tiny BERT embedding model
beside it) and `smol_server` (the real SmolLM2, no embedding model). Tests that stop or
restart a server start their own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import REPO

API_KEY = "sk-test"
SMOL = "smollm2-135m-instruct"


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str = API_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=key, max_retries=0)

    def async_client(self, key: str = API_KEY) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.base}/v1", api_key=key, max_retries=0)

    def http(self, method: str, path: str, body: Any = None,
             key: str | None = API_KEY) -> tuple[int, Any]:
        """What `curl -d @body.json -H "Authorization: Bearer KEY"` does; (status, JSON)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if key is not None:
            req.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def cache_prompt(server: Server, body: dict[str, Any]) -> None:
    """Send a chat request once (one token) so that the identical requests a test compares
    all find its prompt in the prefix cache: with int8 weights, a prompt's tail recomputed
    over a cached prefix rounds differently from the whole prompt computed at once, which
    can flip a near-tie (SmolLM2: "Paris." first, "Paris, France." after)."""
    status, reply = server.http("POST", "/v1/chat/completions", {**body, "max_tokens": 1})
    if status != 200:
        raise AssertionError(f"warming the prefix cache failed: {status} {reply}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], log: Path, module: str = "serving",
                 env: dict[str, str] | None = None) -> Server:
    """`python -m <module> ARGS` (the server, or a launcher that wraps it) on a free port,
    with `env` added to this process's environment."""
    port = _free_port()
    cmd = [sys.executable, "-m", module, *args, "--host", "127.0.0.1", "--port", str(port),
           "--api-key", API_KEY]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(proc, port, log)
    for _ in range(1200):  # liveness guard only: a server that never comes up fails the test
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.base}/health", timeout=10) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.25)
    stop_server(server)
    pytest.fail(f"server did not become healthy:\n{server.log_tail()}")


def stop_server(server: Server) -> int | None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    return server.proc.returncode
