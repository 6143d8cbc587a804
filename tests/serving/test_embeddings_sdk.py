"""`python -m serving` with an embedding model beside the chat model, called through the
official openai SDK (which asks for base64 by default)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import SentenceEncoder
from serving.cli import parse_args
from serving.embedding_startup import load_embeddings
from tests.serving.conftest import MODEL
from tests.serving.embedding_support import ENCODER
from tests.serving.servers import Server

TEXTS = ["the quick brown fox", "paris is a city on a river", "music and a piano"]


def test_sdk_embeddings_create(tiny_server: Server, tiny_bert_dir: Path) -> None:
    client = tiny_server.client()
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


def test_sdk_embeddings_from_the_chat_model_and_errors(tiny_server: Server) -> None:
    import openai

    client = tiny_server.client()
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


def test_sdk_foreign_token_ids_raise_bad_request(tiny_server: Server,
                                                tiny_bert_dir: Path) -> None:
    import openai

    ids = SentenceEncoder(str(tiny_bert_dir)).tokenize(TEXTS[:1])[0]
    client = tiny_server.client()
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=ENCODER, input=[ids[1:-1]])  # no [CLS] / [SEP]
    assert info.value.param == "input"
    assert "check_embedding_ctx_length=False" in info.value.message
    assert client.embeddings.create(model=ENCODER, input=[ids]).data[0].index == 0


async def test_missing_default_embedding_model_is_a_warning(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Without the default embedding model fetched, start-up goes on without embeddings and
    retrieval (a warning says so) and creates nothing under the data folder. (What the server
    then answers without them: test_retrieval_errors, test_embeddings.)"""
    monkeypatch.setenv("ENGINE_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    data = tmp_path / "data"
    plan = parse_args(["--model", str(tiny_model), "--data-dir", str(data)])
    closers: list[Any] = []
    with caplog.at_level(logging.WARNING, logger="serving"):
        encoders, retrieval = await load_embeddings(plan, closers)
    assert encoders == [] and retrieval is None and closers == []
    assert "no embedding model" in caplog.text
    assert not data.exists()
