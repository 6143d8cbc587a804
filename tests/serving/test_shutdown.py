"""`python -m serving` on SIGTERM: within --shutdown-grace and about a second it has exited,
and what was still running when the grace period ended was told so (a streamed response
ends with an error event and [DONE], an unanswered one gets a 503), never cut bare."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import REPO

GRACE_S = 1.0
# A tiny random model with a long context (dummy weights, a byte vocabulary): its streams
# run for many seconds, far beyond the grace period.
TINY = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 512, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": True, "eos_token_id": 256}
LONG = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 8000, "ignore_eos": True}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen[str], port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server never became healthy")


def post(port: int, body: dict[str, Any]) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    return conn.getresponse()


def test_sigterm_ends_running_requests_with_an_error_and_exits_within_the_grace(
        tmp_path: Path) -> None:
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY))
    port = free_port()
    env = {**os.environ, "ENGINE_API_KEY": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model", str(model), "--load-format", "dummy",
         "--served-model-name", "tiny", "--no-embedding-model", "--max-model-len", "8192",
         "--port", str(port), "--data-dir", str(tmp_path / "data"),
         "--shutdown-grace", str(GRACE_S)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(proc, port)
        stream = post(port, {**LONG, "stream": True})
        assert stream.readline().startswith(b"data: {")  # it runs
        unanswered: dict[str, Any] = {}

        def not_streamed() -> None:
            response = post(port, LONG)
            unanswered.update(status=response.status, body=response.read())

        waiter = threading.Thread(target=not_streamed)
        waiter.start()
        time.sleep(0.3)  # the second request is in the engine too
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        events = [line[len(b"data: "):].strip() for line in stream
                  if line.startswith(b"data: ")]
        _, stderr = proc.communicate(timeout=60)
        exited = time.monotonic() - sent
        waiter.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert events[-1] == b"[DONE]", events[-3:]
    error = json.loads(events[-2])["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "server_error", error
    assert all(b'"error"' not in e for e in events[:-2])
    assert unanswered.get("status") == 503, unanswered
    assert json.loads(unanswered["body"])["error"]["code"] == "server_shutting_down"
    # The behaviour under test is a latency: grace + 1 s (was about twice the grace + 2 s).
    assert exited <= GRACE_S + 1.0, exited
