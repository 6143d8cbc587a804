# ruff: noqa: F811  (pytest fixtures imported from embedding_support)
"""`python -m serving` with an embedding model beside the chat model, called through the
official openai SDK (which asks for base64 by default)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from engine import SentenceEncoder
from tests.serving.conftest import MAX_LEN, MODEL
from tests.serving.embedding_support import ENCODER, tiny_bert_dir  # noqa: F401
from tests.serving.test_openai_sdk import Server, start_server, stop_server

TEXTS = ["the quick brown fox", "paris is a city on a river", "music and a piano"]


@pytest.fixture(scope="module")
def emb_server(tiny_model: Path, tiny_bert_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("emb-server")
    server = start_server(["--model", str(tiny_model), "--served-model-name", MODEL,
                           "--max-model-len", str(MAX_LEN), "--embedding-model",
                           str(tiny_bert_dir), "--embedding-model-name", ENCODER,
                           "--data-dir", str(tmp / "data")], tmp / "server.log")
    yield server
    assert stop_server(server) == 0, server.log_tail()


def test_sdk_embeddings_create(emb_server: Server, tiny_bert_dir: Path) -> None:
    client = emb_server.client()
    expected = torch.tensor([o.embedding for o in SentenceEncoder(str(tiny_bert_dir)).embed(TEXTS)])
    default = client.embeddings.create(model=ENCODER, input=TEXTS)  # base64 on the wire
    as_float = client.embeddings.create(model=ENCODER, input=TEXTS, encoding_format="float")
    for resp in (default, as_float):
        assert resp.model == ENCODER and resp.object == "list"
        got = torch.tensor([d.embedding for d in resp.data])
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
        assert [d.index for d in resp.data] == [0, 1, 2]
        assert resp.usage.prompt_tokens == resp.usage.total_tokens > 0
    short = client.embeddings.create(model=ENCODER, input=TEXTS[0], dimensions=4)
    vec = torch.tensor(short.data[0].embedding)
    want = torch.nn.functional.normalize(expected[0, :4], dim=0)
    torch.testing.assert_close(vec, want, atol=1e-6, rtol=1e-5)


def test_sdk_embeddings_from_the_chat_model_and_errors(emb_server: Server) -> None:
    import openai

    client = emb_server.client()
    resp = client.embeddings.create(model=MODEL, input="Hello there")
    vec = torch.tensor(resp.data[0].embedding)
    assert vec.shape == (64,) and abs(vec.norm().item() - 1) < 1e-5
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=ENCODER, input="cat " * 60)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL, ENCODER]


def test_missing_default_embedding_model_is_a_warning(tiny_model: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from qdrant_client import QdrantClient

    monkeypatch.setenv("ENGINE_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    data = tmp_path / "data"
    server = start_server(["--model", str(tiny_model), "--served-model-name", MODEL,
                           "--max-model-len", str(MAX_LEN), "--data-dir", str(data)],
                          tmp_path / "server.log")
    try:
        assert [m.id for m in server.client().models.list().data] == [MODEL]
        status, body = server.http("POST", "/v1/retrieve",
                                   {"messages": [{"role": "user", "content": "hi"}]})
        assert status == 400 and body["error"]["code"] == "retrieval_disabled"
        QdrantClient(path=str(data / "qdrant")).close()  # the server let go of the store
    finally:
        assert stop_server(server) == 0
    assert "no embedding model" in server.log_tail()
