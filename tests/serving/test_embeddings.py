# ruff: noqa: F811  (pytest fixtures imported from embedding_support)
"""POST /v1/embeddings in-process: a tiny random BERT encoder and the tiny chat model.

Expected vectors come from the offline engine (SentenceEncoder, LLM.embed) on the same
checkpoints, and token counts from the tokenizer."""

from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np
import pytest

from engine import SentenceEncoder
from tests.serving.conftest import MODEL, Api, Reference, assert_error
from tests.serving.embedding_support import (  # noqa: F401  (fixtures)
    ENCODER,
    emb_api,
)

TEXTS = ["the quick brown fox", "paris is a city on a river", "music and a piano"]


@pytest.fixture(scope="module")
def offline(tiny_bert_dir: Path) -> SentenceEncoder:
    return SentenceEncoder(str(tiny_bert_dir))


def vectors(body: dict) -> list[list[float]]:
    assert body["object"] == "list"
    assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    assert all(d["object"] == "embedding" for d in body["data"])
    return [d["embedding"] for d in body["data"]]


async def embed(api: Api, **body) -> dict:
    body.setdefault("model", ENCODER)
    resp = await api.post("/v1/embeddings", body)
    assert resp.status == 200, resp.text
    return resp.json


async def test_every_input_shape(emb_api: Api, offline: SentenceEncoder) -> None:
    expected = [o.embedding for o in offline.embed(TEXTS)]
    ids = offline.tokenize(TEXTS)
    one = await embed(emb_api, input=TEXTS[0])
    assert vectors(one)[0] == pytest.approx(expected[0], abs=1e-6)
    assert one["model"] == ENCODER
    assert one["usage"] == {"prompt_tokens": len(ids[0]), "total_tokens": len(ids[0])}
    many = await embed(emb_api, input=TEXTS)
    for got, want in zip(vectors(many), expected, strict=True):
        assert got == pytest.approx(want, abs=1e-6)
    assert many["usage"]["prompt_tokens"] == sum(map(len, ids))
    by_ids = await embed(emb_api, input=ids[1])
    assert vectors(by_ids)[0] == pytest.approx(expected[1], abs=1e-6)
    by_id_lists = await embed(emb_api, input=ids)
    for got, want in zip(vectors(by_id_lists), expected, strict=True):
        assert got == pytest.approx(want, abs=1e-6)
    alias = await embed(emb_api, input=TEXTS[0], model=f"{ENCODER}-alias")
    assert vectors(alias)[0] == pytest.approx(expected[0], abs=1e-6)


async def test_base64_is_little_endian_float32(emb_api: Api) -> None:
    floats = vectors(await embed(emb_api, input=TEXTS))
    packed = await embed(emb_api, input=TEXTS, encoding_format="base64")
    for text, want in zip(vectors(packed), floats, strict=True):
        assert isinstance(text, str)
        got = np.frombuffer(base64.b64decode(text), dtype="<f4")
        np.testing.assert_allclose(got, np.asarray(want, dtype=np.float32), rtol=0, atol=0)


async def test_dimensions_truncate_and_renormalise(emb_api: Api) -> None:
    full = vectors(await embed(emb_api, input=TEXTS[1]))[0]
    short = vectors(await embed(emb_api, input=TEXTS[1], dimensions=8))[0]
    assert len(short) == 8
    norm = math.sqrt(sum(v * v for v in full[:8]))
    assert short == pytest.approx([v / norm for v in full[:8]], abs=1e-6)
    assert math.sqrt(sum(v * v for v in short)) == pytest.approx(1.0, abs=1e-6)
    resp = await emb_api.post("/v1/embeddings", {"model": ENCODER, "input": "x",
                                                 "dimensions": 33})
    assert "32" in assert_error(resp, 400, param="dimensions")["message"]
    resp = await emb_api.post("/v1/embeddings", {"model": ENCODER, "input": "x",
                                                 "dimensions": 0})
    assert_error(resp, 400, param="dimensions")


async def test_over_length_input(emb_api: Api, offline: SentenceEncoder) -> None:
    text = "cat " * 60  # 62 tokens; the tiny encoder takes 48
    resp = await emb_api.post("/v1/embeddings", {"model": ENCODER, "input": ["ok", text]})
    err = assert_error(resp, 400, param="input", code="context_length_exceeded")
    assert "62" in err["message"] and "48" in err["message"]
    body = await embed(emb_api, input=text, truncate=True)
    assert body["usage"]["prompt_tokens"] == 48
    want = offline.embed(text, truncate=True)[0].embedding
    assert vectors(body)[0] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize(("body", "param"), [
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": ["ok", ""]}, "input"),
    ({"input": [[]]}, "input"),
    ({"input": 3}, "input"),
    ({"input": [1, "a"]}, "input"),
    ({"input": [10**9]}, "input"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "pooling": "mean"}, "pooling"),
    ({}, "input"),
])
async def test_bad_requests(emb_api: Api, body: dict, param: str) -> None:
    resp = await emb_api.post("/v1/embeddings", {"model": ENCODER, **body})
    assert_error(resp, 400, param=param, type="invalid_request_error")


async def test_token_ids_of_another_tokenizer_are_a_400_that_says_to_send_text(
        emb_api: Api, offline: SentenceEncoder) -> None:
    """langchain's default client sends OpenAI (cl100k) ids; here: ids without [CLS] [SEP]."""
    ids = offline.tokenize(TEXTS)
    words = ids[0][1:-1]
    for bad in (words, [words], [ids[0], words]):
        resp = await emb_api.post("/v1/embeddings", {"model": ENCODER, "input": bad})
        err = assert_error(resp, 400, param="input", type="invalid_request_error")
        assert "[CLS]" in err["message"] and "Send the text instead" in err["message"]
        assert "check_embedding_ctx_length=False" in err["message"]
    assert "input[1]" in err["message"]  # the list's offending item
    await embed(emb_api, input=ids)  # the tokenizer's own ids still work


async def test_unknown_model_and_auth(emb_api: Api) -> None:
    resp = await emb_api.post("/v1/embeddings", {"model": "nope", "input": "x"})
    assert_error(resp, 404, param="model", code="model_not_found")
    resp = await emb_api.post("/v1/embeddings", {"model": ENCODER, "input": "x"}, key=None)
    assert_error(resp, 401)
    # The server keeps serving after all of that.
    await embed(emb_api, input="still here")


async def test_chat_model_gives_pooled_hidden_states(emb_api: Api, ref: Reference) -> None:
    for pooling in ("mean", "last"):
        body = await embed(emb_api, model=MODEL, input=TEXTS, pooling=pooling)
        expected = ref.llm.embed(TEXTS, pooling=pooling)
        for got, want in zip(vectors(body), expected, strict=True):
            assert got == pytest.approx(want.embedding, abs=1e-5)
        assert body["model"] == MODEL
        assert body["usage"]["prompt_tokens"] == sum(len(e.prompt_token_ids) for e in expected)
    resp = await emb_api.post("/v1/embeddings", {"model": MODEL, "input": [5] * 300})
    err = assert_error(resp, 400, param="input", code="context_length_exceeded")
    assert "300" in err["message"] and "256" in err["message"]


async def test_models_list_the_encoder(emb_api: Api) -> None:
    body = (await emb_api.get("/v1/models")).json
    ids = [m["id"] for m in body["data"]]
    assert ids == [MODEL, ENCODER, f"{ENCODER}-alias"]
    card = (await emb_api.get(f"/v1/models/{ENCODER}")).json
    assert card["id"] == ENCODER and card["task"] == "embedding" and card["max_model_len"] == 48


async def test_pooled_embeddings_do_not_disturb_running_requests(emb_api: Api,
                                                                 ref: Reference) -> None:
    import asyncio

    from tests.serving.conftest import HELLO

    expected = ref.chat(HELLO, temperature=0, max_tokens=12, ignore_eos=True).outputs[0].text
    chat = asyncio.create_task(emb_api.chat(messages=HELLO, temperature=0, max_tokens=12,
                                            ignore_eos=True))
    for _ in range(3):  # embeddings interleave with the chat's decode steps
        await embed(emb_api, model=MODEL, input=TEXTS)
    resp = await chat
    assert resp.status == 200 and resp.json["choices"][0]["message"]["content"] == expected
