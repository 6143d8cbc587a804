"""The server killed (SIGKILL) while /v1/create/rag writes points, and restarted: it shows
what it showed before the killed request, nothing is left half-done on disk, and ingesting
again stores each chunk once. One real kill (each start-up costs seconds):
test_retrieval_durability.py checks the other crash points in-process."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving.conftest import AUTH, MAX_LEN, MODEL
from tests.serving.embedding_support import ENCODER
from tests.serving.servers import Server, start_server, stop_server
from tests.serving.test_retrieval_durability import A, B, check_settled, doc, pairs


def serve(tiny_model: Path, encoder: Path, data: Path, log: Path,
          kill_after: int | None = None) -> Server:
    """The server; with kill_after, one that SIGKILLs itself once it has written that many
    points (tests/serving/crash_launcher.py)."""
    args = ["--model", str(tiny_model), "--served-model-name", MODEL, "--max-model-len",
            str(MAX_LEN), "--embedding-model", str(encoder), "--embedding-model-name", ENCODER,
            "--data-dir", str(data)]
    if kill_after is None:
        return start_server(args, log)
    return start_server([str(kill_after), *args], log, module="tests.serving.crash_launcher")


def post(server: Server, path: str, **kw: Any) -> httpx.Response:
    return httpx.post(f"{server.base}{path}", headers=AUTH, timeout=120, **kw)


def create_rag(server: Server, **kw: Any) -> httpx.Response:
    resp = post(server, "/v1/create/rag", **kw)
    assert resp.status_code == 200, resp.text
    return resp


def upload_a(server: Server) -> httpx.Response:
    return post(server, "/v1/create/rag", files={"file": ("a.md", doc(A), "text/markdown")},
                data={"chunk_capacity": "8"})


def listed(server: Server) -> list[str]:
    resp = httpx.get(f"{server.base}/v1/files", headers=AUTH, timeout=60)
    return sorted(f["filename"] for f in resp.json()["data"])


def searchable(server: Server) -> list[str]:
    resp = post(server, "/v1/retrieve", json={
        "messages": [{"role": "user", "content": "the quick brown fox"}], "limit": 100,
        "score_threshold": -1.0})
    assert resp.status_code == 200, resp.text
    return sorted(p["source"] for p in resp.json()["points"])


def killed(server: Server, request: Callable[[], Any]) -> None:
    """The request loses its connection: the server died of SIGKILL while serving it."""
    with pytest.raises(httpx.TransportError):
        request()
    assert server.proc.wait(timeout=60) == -signal.SIGKILL, server.log_tail()


def test_sigkill_while_points_are_written(tiny_model: Path, tiny_bert_dir: Path,
                                          tmp_path: Path) -> None:
    data = tmp_path / "data"
    # B uploaded and ingested (one point a paragraph); then A uploaded and ingested in one
    # call, the server killed 5 of its points in.
    server = serve(tiny_model, tiny_bert_dir, data, tmp_path / "1.log", kill_after=len(B) + 5)
    try:
        resp = post(server, "/v1/files", files={"file": ("b.md", doc(B), "text/markdown")})
        b = resp.json()["id"]
        assert create_rag(server, json={"id": b, "chunk_capacity": 8}).json()["points"] == len(B)
        killed(server, lambda: upload_a(server))
    finally:
        stop_server(server)
    # Restarted: no trace of A, B as it was; then retries store each chunk once.
    server = serve(tiny_model, tiny_bert_dir, data, tmp_path / "2.log")
    try:
        assert listed(server) == ["b.md"]
        assert searchable(server) == sorted(B)
        check_settled(data, ["b.md"])
        assert "its upload was interrupted" in server.log_tail()
        for _ in range(2):
            assert create_rag(server, json={"id": b, "chunk_capacity": 12}
                              ).json()["points"] == len(pairs(B))
        assert searchable(server) == sorted(pairs(B))
        assert upload_a(server).status_code == 200
        assert listed(server) == ["a.md", "b.md"]
        assert searchable(server) == sorted(pairs(B) + A)
    finally:
        assert stop_server(server) == 0, server.log_tail()
