# ruff: noqa: F811  (pytest fixtures imported from embedding_support)
"""The retrieval endpoints in-process with the real all-MiniLM-L6-v2: ingestion, ranking,
deletion, and retrieved context in chat completions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine import AsyncEngine
from tests.serving.conftest import Api, Reference
from tests.serving.embedding_support import (
    MINILM,
    close_all,
    make_state_api,
    minilm_dir,  # noqa: F401
)

pytestmark = pytest.mark.slow

# (fact paragraph, question whose answer is in it, a phrase only that paragraph holds)
FACTS = [
    (("The Eiffel Tower in Paris was completed in 1889 for the World's Fair and is made of "
     "wrought iron."), "When was the Eiffel Tower finished?", "Eiffel Tower"),
    (("Honeybees communicate the location of flowers to their hive mates through a waggle "
     "dance."), "How do bees tell each other where food is?", "waggle dance"),
    (("The Python programming language was created by Guido van Rossum and first released in "
     "1991."), "Who invented the Python language?", "Guido van Rossum"),
    ("Mount Kilimanjaro in Tanzania is the highest mountain in Africa, rising 5,895 metres.",
     "What is the tallest peak on the African continent?", "Kilimanjaro"),
    (("Photosynthesis lets plants turn sunlight, water and carbon dioxide into glucose and "
     "oxygen."), "How do plants make food from light?", "Photosynthesis"),
    (("The Great Barrier Reef off Queensland, Australia, is the largest coral reef system in "
     "the world."), "Where is the biggest coral reef?", "Great Barrier Reef"),
    (("Ludwig van Beethoven composed nine symphonies and kept writing music after he became "
     "deaf."), "Which composer continued working despite losing his hearing?", "Beethoven"),
    (("Espresso is brewed by forcing hot water through finely ground coffee beans under high "
     "pressure."), "How is an espresso coffee made?", "Espresso"),
    ("The human heart has four chambers: two atria on top and two ventricles below.",
     "How many chambers does the heart have?", "four chambers"),
    ("Saturn's rings are made mostly of ice particles with some rocky debris and dust.",
     "What are the rings of Saturn composed of?", "Saturn"),
]
PROMPT = "Context:\n"  # short: the tiny chat model's context is 256 tokens of a small vocabulary
DOC = "# Facts\n\n" + "\n\n".join(f for f, _, _ in FACTS) + "\n"


@pytest.fixture
async def rag_api(aiohttp_client: Any, engine: AsyncEngine, minilm_dir: Path,
                  tmp_path: Path) -> AsyncIterator[Api]:
    api, closers = await make_state_api(aiohttp_client, engine, minilm_dir, MINILM,
                                        data_dir=tmp_path / "data", rag_prompt=PROMPT)
    yield api
    await close_all(closers)


async def upload(api: Api, name: str, content: bytes, path: str = "/v1/files",
                 **fields: str) -> Any:
    import aiohttp

    form = aiohttp.FormData()
    for k, v in fields.items():
        form.add_field(k, v)
    form.add_field("file", content, filename=name, content_type="text/plain")
    async with api.client.post(path, data=form, headers={"Authorization": "Bearer sk-test"}) as r:
        return r.status, await r.json()


async def retrieve(api: Api, question: str, **extra: Any) -> Any:
    body = {"messages": [{"role": "system", "content": "You are helpful."},
                         {"role": "user", "content": question}], **extra}
    resp = await api.post("/v1/retrieve", body)
    assert resp.status == 200, resp.text
    return resp.json


async def test_ingest_and_the_right_chunk_ranks_first(rag_api: Api) -> None:
    status, made = await upload(rag_api, "facts.md", DOC.encode(), "/v1/create/rag",
                                chunk_capacity="25")
    assert status == 200, made
    assert made["collection_name"] == "default" and made["filename"] == "facts.md"
    assert made["chunks"] == made["points"] == 11  # the heading and one chunk per fact
    assert made["model"] == MINILM and made["usage"]["prompt_tokens"] > 0
    for fact, question, phrase in FACTS:
        body = await retrieve(rag_api, question, score_threshold=0.0, limit=3)
        assert body["limit"] == 3 and body["score_threshold"] == 0.0
        scores = [p["score"] for p in body["points"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3
        assert phrase in body["points"][0]["source"], (question, body["points"][0])
        assert body["points"][0]["source"] == fact


async def test_files_listing_chunks_and_delete_removes_points(rag_api: Api) -> None:
    status, record = await upload(rag_api, "facts.txt", DOC.encode())
    assert status == 200 and record["object"] == "file" and record["bytes"] == len(DOC.encode())
    assert record["id"].startswith("file_") and record["filename"] == "facts.txt"
    listing = (await rag_api.get("/v1/files")).json
    assert listing["object"] == "list" and [f["id"] for f in listing["data"]] == [record["id"]]
    assert (await rag_api.get(f"/v1/files/{record['id']}")).json == record

    resp = await rag_api.post("/v1/chunks", {"id": record["id"], "filename": "facts.txt",
                                             "chunk_capacity": 25})
    assert resp.status == 200, resp.text
    chunks = resp.json["chunks"]
    assert chunks[1:] == [f for f, _, _ in FACTS]
    tok = rag_api.state.encoders[0].encoder.encoder.tokenizer
    assert all(len(tok.encode(c, add_special_tokens=False).ids) <= 25 for c in chunks)

    resp = await rag_api.post("/v1/create/rag", {"id": record["id"], "chunk_capacity": 25,
                                                 "collection_name": "mine"})
    assert resp.status == 200 and resp.json["points"] == len(chunks)
    hit = await retrieve(rag_api, FACTS[0][1], collection_name="mine", score_threshold=0.0)
    assert hit["points"][0]["source"] == FACTS[0][0]

    resp = await rag_api.request("DELETE", f"/v1/files/{record['id']}")
    assert resp.status == 200, resp.text
    assert resp.json == {"id": record["id"], "object": "file", "deleted": True,
                         "points_deleted": len(chunks)}
    assert (await rag_api.get("/v1/files")).json["data"] == []
    after = await retrieve(rag_api, FACTS[0][1], collection_name="mine", score_threshold=0.0)
    assert after["points"] == []
    resp = await rag_api.request("DELETE", f"/v1/files/{record['id']}")
    assert resp.status == 404 and resp.json["error"]["code"] == "file_not_found"


async def test_default_threshold_filters_weak_points(rag_api: Api) -> None:
    await upload(rag_api, "facts.md", DOC.encode(), "/v1/create/rag", chunk_capacity="25")
    body = await retrieve(rag_api, "completely unrelated: quarterly tax forms for llamas")
    assert body["score_threshold"] == 0.4 and body["limit"] == 5
    assert all(p["score"] >= 0.4 for p in body["points"])


async def test_chat_with_retrieved_context(rag_api: Api, ref: Reference) -> None:
    await upload(rag_api, "facts.md", DOC.encode(), "/v1/create/rag", chunk_capacity="25")
    fact, question, _ = FACTS[2]
    system = {"role": "system", "content": "You are helpful."}
    user = {"role": "user", "content": question}
    plain = ref.chat_prompt_ids([system, user])
    rag = {"collection_name": "default", "limit": 1, "score_threshold": 0.0}
    with_context = [{"role": "system", "content": f"You are helpful.\n\n{PROMPT}{fact}"},
                    user]
    resp = await rag_api.chat(messages=[system, user], max_tokens=1, rag=rag)
    assert resp.status == 200, resp.text
    assert resp.json["usage"]["prompt_tokens"] == len(ref.chat_prompt_ids(with_context))
    resp = await rag_api.chat(messages=[user], max_tokens=1, rag=rag)
    added = [{"role": "system", "content": f"{PROMPT}{fact}"}, user]
    assert resp.json["usage"]["prompt_tokens"] == len(ref.chat_prompt_ids(added))
    for off in ({}, {"rag": False}):  # the server default here is off
        resp = await rag_api.chat(messages=[system, user], max_tokens=1, **off)
        assert resp.json["usage"]["prompt_tokens"] == len(plain)
    resp = await rag_api.chat(messages=[user], max_tokens=1,
                              rag={"collection_name": "nope"})
    assert resp.status == 404 and resp.json["error"]["code"] == "collection_not_found"
    resp = await rag_api.chat(messages=[user], max_tokens=1, rag={"limit": 0})
    assert resp.status == 400 and resp.json["error"]["param"] == "rag.limit"
    assert (await rag_api.chat(messages=[user], max_tokens=1, rag="yes")).status == 400


async def test_server_default_rag_chat(aiohttp_client: Any, engine: AsyncEngine,
                                       minilm_dir: Path, tmp_path: Path,
                                       ref: Reference) -> None:
    api, closers = await make_state_api(aiohttp_client, engine, minilm_dir, MINILM,
                                        data_dir=tmp_path / "d", rag_chat=True, limit=1,
                                        score_threshold=0.0, rag_prompt=PROMPT)
    try:
        await upload(api, "facts.md", DOC.encode(), "/v1/create/rag", chunk_capacity="25")
        fact, question, _ = FACTS[4]
        user = {"role": "user", "content": question}
        resp = await api.chat(messages=[user], max_tokens=1)
        added = [{"role": "system", "content": f"{PROMPT}{fact}"}, user]
        assert resp.json["usage"]["prompt_tokens"] == len(ref.chat_prompt_ids(added))
        resp = await api.chat(messages=[user], max_tokens=1, rag=False)
        assert resp.json["usage"]["prompt_tokens"] == len(ref.chat_prompt_ids([user]))
    finally:
        await close_all(closers)




async def test_chat_reports_the_chunks_it_used(rag_api: Api) -> None:
    """`retrieved_chunks`: what was added to the prompt, in the body and in the first chunk
    of a stream; absent when retrieval was off (PROTOCOL.md)."""
    await upload(rag_api, "facts.md", DOC.encode(), "/v1/create/rag", chunk_capacity="25")
    fact, question, _ = FACTS[1]
    user = [{"role": "user", "content": question}]
    rag = {"limit": 2, "score_threshold": 0.0}
    found = await retrieve(rag_api, question, limit=2, score_threshold=0.0)
    expected = [p["source"] for p in found["points"]]
    assert expected[0] == fact  # the search's own ranking: the question's fact first
    resp = await rag_api.chat(messages=user, max_tokens=1, rag=rag)
    assert resp.status == 200, resp.text
    chunks = resp.json["retrieved_chunks"]
    assert [c["source"] for c in chunks] == expected
    assert all(isinstance(c["score"], float) for c in chunks)
    stream = await rag_api.stream("/v1/chat/completions",
                                  {"messages": user, "max_tokens": 2, "rag": rag})
    assert [c["source"] for c in stream.events[0]["retrieved_chunks"]] == expected
    assert all("retrieved_chunks" not in e for e in stream.events[1:])
    none = await rag_api.chat(messages=user, max_tokens=1,
                              rag={"score_threshold": 0.99})  # nothing that close
    assert none.json["retrieved_chunks"] == []
    plain = await rag_api.chat(messages=user, max_tokens=1)
    assert "retrieved_chunks" not in plain.json
