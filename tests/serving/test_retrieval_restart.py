"""The server as users run it, with the default embedding model (all-MiniLM-L6-v2) and the
local vector store: ingested points survive a restart; one process owns the store."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from engine import SentenceEncoder
from serving.__main__ import main
from tests.serving.conftest import AUTH, MAX_LEN, MODEL
from tests.serving.embedding_support import MINILM
from tests.serving.servers import Server, start_server, stop_server
from tests.serving.test_retrieval import DOC, FACTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm_fetched() -> None:
    from weights import model_path

    if not (model_path(MINILM) / "model.safetensors").exists():
        pytest.skip("all-MiniLM-L6-v2 is not fetched; run python -m weights.fetch")


def serve(tiny_model: Path, data: Path, log: Path) -> Server:
    return start_server(["--model", str(tiny_model), "--served-model-name", MODEL,
                         "--max-model-len", str(MAX_LEN), "--data-dir", str(data)], log)


def ask(server: Server, question: str) -> dict:
    body = {"messages": [{"role": "user", "content": question}], "score_threshold": 0.0,
            "limit": 2}
    resp = httpx.post(f"{server.base}/v1/retrieve", json=body, headers=AUTH, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_points_survive_a_restart(minilm_fetched: None, tiny_model: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    server = serve(tiny_model, data, tmp_path / "first.log")
    try:
        models = [m.id for m in server.client().models.list().data]
        assert models == [MODEL, MINILM]  # served by default beside the chat model
        texts = [f for f, _, _ in FACTS[:4]]
        got = server.client().embeddings.create(model=MINILM, input=texts)  # base64 on the wire
        want = SentenceEncoder(MINILM).embed(texts)
        for d, w in zip(got.data, want, strict=True):
            assert d.embedding == pytest.approx(w.embedding, abs=1e-6)
        assert got.usage.prompt_tokens == sum(len(w.prompt_token_ids) for w in want)
        resp = httpx.post(f"{server.base}/v1/create/rag", headers=AUTH, timeout=120,
                          files={"file": ("facts.md", DOC.encode(), "text/markdown")},
                          data={"chunk_capacity": "25"})
        assert resp.status_code == 200, resp.text
        file_id = resp.json()["id"]
        before = [ask(server, q) for _, q, _ in FACTS[:3]]
        for (fact, _, _), body in zip(FACTS, before, strict=False):
            assert body["points"][0]["source"] == fact
        # A second server on the same data dir: a clear start-up error, exit code 2. (Its
        # main in-process: a subprocess would spend seconds importing torch.)
        code = main(["--model", str(tiny_model), "--port", "0", "--data-dir", str(data)])
        assert code == 2
        assert "retrieval store" in capsys.readouterr().err
    finally:
        assert stop_server(server) == 0, server.log_tail()
    server = serve(tiny_model, data, tmp_path / "second.log")
    try:
        after = [ask(server, q) for _, q, _ in FACTS[:3]]
        for a, b in zip(after, before, strict=True):
            assert [p["source"] for p in a["points"]] == [p["source"] for p in b["points"]]
            # The store keeps float32 vectors on disk: scores agree to that precision.
            assert [p["score"] for p in a["points"]] == pytest.approx(
                [p["score"] for p in b["points"]], abs=1e-6)
        listing = httpx.get(f"{server.base}/v1/files", headers=AUTH).json()
        assert [f["id"] for f in listing["data"]] == [file_id]
    finally:
        assert stop_server(server) == 0, server.log_tail()
