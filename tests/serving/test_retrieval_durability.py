"""Retrieval data survives crashes and retries: a file is listed and searchable with all of
its points or not at all, and ingesting it twice stores each chunk once.

A crash is taken in-process as the data directory at one instant: at the chosen point of an
ingestion or deletion the test copies the directory (what a kill there leaves on disk: the
file store and qdrant's local store commit every write before the next begins), then fails
the operation. A server opened over the copy, the way start-up opens one, is the restarted
server. test_retrieval_kill.py does the same with real SIGKILLs at two of these points.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from engine import AsyncEngine, AsyncSentenceEncoder
from serving.served import ServedEncoder
from tests.engine.embedding.conftest import WORDS
from tests.serving.conftest import API_KEY, MAX_LEN, MODEL, Api
from tests.serving.embedding_support import ENCODER
from tests.serving.test_retrieval_errors import post_form


def paragraphs(n: int, start: int = 0) -> list[str]:
    """n distinct 5-token paragraphs (words of the tiny encoder's vocabulary)."""
    k = len(WORDS)
    return [f"{WORDS[i % k]} {WORDS[(i // k) % k]} quick brown fox" for i in range(start, start + n)]


def doc(paras: list[str]) -> bytes:
    return ("\n\n".join(paras) + "\n").encode()


def pairs(paras: list[str]) -> list[str]:
    """The chunks at capacity 12: two 5-token paragraphs fit, a third does not."""
    return ["\n\n".join(paras[i:i + 2]) for i in range(0, len(paras), 2)]


B = paragraphs(12)  # a file ingested before each crash, at capacity 8: one chunk a paragraph
A = paragraphs(10, start=100)  # the file whose ingestion crashes


@pytest.fixture(scope="module")
async def encoder(tiny_bert_dir: Path) -> AsyncIterator[ServedEncoder]:
    enc = AsyncSentenceEncoder(str(tiny_bert_dir))
    yield ServedEncoder(ENCODER, enc)
    await enc.shutdown()


OpenServer = Callable[[Path], Awaitable[Api]]


@pytest.fixture
async def open_server(aiohttp_client: Any, shared_engine: AsyncEngine,
                      encoder: ServedEncoder) -> AsyncIterator[OpenServer]:
    """Opens an in-process server over a data directory the way start-up does."""
    from serving.app import make_app
    from serving.retrieval.service import RetrievalService, RetrievalSettings
    from serving.served import ServedModel
    from serving.state import ServerSettings, ServerState

    opened: list[RetrievalService] = []

    async def open_(data: Path) -> Api:
        state = ServerState([ServedModel(MODEL, shared_engine, max_model_len=MAX_LEN)],
                            ServerSettings(api_key=API_KEY), encoders=[encoder])
        state.retrieval = await RetrievalService.open(RetrievalSettings(data), encoder)
        opened.append(state.retrieval)
        return Api(await aiohttp_client(make_app(state)), shared_engine, state)

    yield open_
    for svc in opened:
        await svc.close()


# ---- what a user sees ------------------------------------------------------------------


async def listed(api: Api) -> list[str]:
    resp = await api.get("/v1/files")
    assert resp.status == 200, resp.text
    return sorted(f["filename"] for f in resp.json["data"])


async def searchable(api: Api, collection: str = "default") -> list[str]:
    """Every chunk a search can return, sorted (a chunk stored twice shows twice)."""
    resp = await api.post("/v1/retrieve", {
        "messages": [{"role": "user", "content": "the quick brown fox"}],
        "collection_name": collection, "limit": 100, "score_threshold": -1.0})
    if resp.status == 404:
        return []
    assert resp.status == 200, resp.text
    return sorted(p["source"] for p in resp.json["points"])


async def file_id(api: Api, filename: str) -> str:
    return next(f["id"] for f in (await api.get("/v1/files")).json["data"]
                if f["filename"] == filename)


async def create_rag(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    resp = await api.post("/v1/create/rag", body)
    assert resp.status == 200, resp.text
    return resp.json


async def with_b(api: Api) -> str:
    """Uploads b.md and ingests it at capacity 8; its id."""
    resp = await post_form(api, "/v1/files", ("b.md", doc(B)))
    assert resp.status == 200, resp.text
    made = await create_rag(api, {"id": resp.json["id"], "chunk_capacity": 8})
    assert made["points"] == len(B)
    return resp.json["id"]


def check_settled(data: Path, files: list[str]) -> None:
    """On disk: exactly these files' records and contents, every record settled (no file
    or collection left mid-ingestion or mid-deletion), no stray temporary file."""
    names = sorted(p.name for p in (data / "files").iterdir())
    records = [json.loads(p.read_text()) for p in (data / "files").glob("*.json")]
    assert sorted(r["filename"] for r in records) == sorted(files)
    assert names == sorted([f"{r['id']}.json" for r in records] +
                           [f"{r['id']}.data" for r in records])
    for r in records:
        assert r.get("status", "ready") == "ready", r
        assert all(c.get("ingesting") is None for c in r.get("collections", {}).values()), r


# ---- crashes ------------------------------------------------------------------------------


class Crashed(RuntimeError):
    pass


class Crash:
    """The data directory copied to `snapshot` when the crash point is reached."""

    def __init__(self, data: Path, snapshot: Path) -> None:
        self.data, self.snapshot, self.fired = data, snapshot, False

    def fire(self) -> NoReturn:
        shutil.copytree(self.data, self.snapshot)
        self.fired = True
        raise Crashed("crash point reached")


def qdrant(api: Api) -> Any:
    return api.state.retrieval.store._client


def crash_in_embed(monkeypatch: pytest.MonkeyPatch, api: Api, crash: Crash) -> None:
    """Crash while the chunks are embedded: the file is stored, no point is."""
    svc = api.state.retrieval
    real = svc.embed

    async def embed(texts: list[str]) -> Any:
        if not crash.fired:
            crash.fire()
        return await real(texts)
    monkeypatch.setattr(svc, "embed", embed)


def crash_in_upsert(monkeypatch: pytest.MonkeyPatch, api: Api, crash: Crash,
                    keep: int = 3) -> None:
    """Crash while points are written, after `keep` of them."""
    client = qdrant(api)
    real = client.upsert

    def upsert(collection_name: str, points: list[Any], **kw: Any) -> Any:
        if crash.fired:
            return real(collection_name, points=points, **kw)
        real(collection_name, points=points[:keep], **kw)
        crash.fire()
    monkeypatch.setattr(client, "upsert", upsert)


def crash_in_delete(monkeypatch: pytest.MonkeyPatch, api: Api, crash: Crash,
                    after: bool) -> None:
    """Crash at the first deletion of points: before it runs or once it has."""
    client = qdrant(api)
    real = client.delete

    def delete(*args: Any, **kw: Any) -> Any:
        if crash.fired:
            return real(*args, **kw)
        if after:
            real(*args, **kw)
        crash.fire()
    monkeypatch.setattr(client, "delete", delete)


async def test_create_rag_twice_stores_each_chunk_once(open_server: OpenServer,
                                                       tmp_path: Path) -> None:
    api = await open_server(tmp_path / "data")
    b = await with_b(api)
    again = await create_rag(api, {"id": b, "chunk_capacity": 8})  # a client's retry
    assert again["chunks"] == again["points"] == len(B)
    assert await searchable(api) == sorted(B)
    assert await api.state.retrieval.store.count_file(b) == len(B)
    # Other options replace the file's chunks in that collection; other collections keep theirs.
    await create_rag(api, {"id": b, "chunk_capacity": 8, "collection_name": "other"})
    await create_rag(api, {"id": b, "chunk_capacity": 12})
    assert await searchable(api) == sorted(pairs(B))
    assert await searchable(api, "other") == sorted(B)
    assert await api.state.retrieval.store.count_file(b) == len(B) + len(pairs(B))
    # Two at once, with other options: one replaces the other, whole. In two collections
    # at once: the record keeps both (what a crash would be rolled back to).
    await asyncio.gather(create_rag(api, {"id": b, "chunk_capacity": 8}),
                         create_rag(api, {"id": b, "chunk_capacity": 12}))
    assert await searchable(api) in (sorted(B), sorted(pairs(B)))
    await asyncio.gather(create_rag(api, {"id": b, "chunk_capacity": 12}),
                         create_rag(api, {"id": b, "collection_name": "third"}))
    record = json.loads((tmp_path / "data" / "files" / f"{b}.json").read_text())
    assert sorted(record["collections"]) == ["default", "other", "third"]
    # Uploading and ingesting in one call twice makes two files, each stored once.
    for _ in range(2):
        resp = await post_form(api, "/v1/create/rag", ("a.md", doc(A)), chunk_capacity="8")
        assert resp.status == 200 and resp.json["points"] == len(A), resp.text
    assert await searchable(api) == sorted(pairs(B) + A + A)


@pytest.mark.parametrize("where", ["embedding", "points"])
async def test_crashed_upload_and_ingest_leaves_no_file(
        open_server: OpenServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        where: str) -> None:
    data, snapshot = tmp_path / "data", tmp_path / "crashed"
    api = await open_server(data)
    await with_b(api)
    crash = Crash(data, snapshot)
    (crash_in_embed if where == "embedding" else crash_in_upsert)(monkeypatch, api, crash)
    resp = await post_form(api, "/v1/create/rag", ("a.md", doc(A)), chunk_capacity="8")
    assert crash.fired and resp.status == 500
    monkeypatch.undo()

    api = await open_server(snapshot)  # the restarted server
    assert await listed(api) == ["b.md"]
    assert await searchable(api) == sorted(B)
    check_settled(snapshot, ["b.md"])


@pytest.mark.parametrize(("before", "where", "after"), [
    (None, "points", None),  # a first ingestion of an uploaded file: rolled back
    (8, "points", 8),  # a re-ingestion with other options: rolled back to the old chunks
    (8, "cleanup", 12),  # every new point written, the old ones not yet removed: done
])
async def test_crashed_ingest_of_an_uploaded_file(
        open_server: OpenServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        before: int | None, where: str, after: int | None) -> None:
    data, snapshot = tmp_path / "data", tmp_path / "crashed"
    api = await open_server(data)
    resp = await post_form(api, "/v1/files", ("b.md", doc(B)))
    b = resp.json["id"]
    if before is not None:
        await create_rag(api, {"id": b, "chunk_capacity": before})
    crash = Crash(data, snapshot)
    if where == "points":
        crash_in_upsert(monkeypatch, api, crash)
    else:
        crash_in_delete(monkeypatch, api, crash, after=False)
    resp = await api.post("/v1/create/rag", {"id": b, "chunk_capacity": 12})
    assert crash.fired
    if where == "cleanup":  # committed: a success, its old points hidden until removed
        assert resp.status == 200, resp.text
        assert await searchable(api) == sorted(pairs(B))
    else:
        assert resp.status == 500
    monkeypatch.undo()

    api = await open_server(snapshot)
    assert await listed(api) == ["b.md"]
    want = {None: [], 8: B, 12: pairs(B)}[after]
    assert await searchable(api) == sorted(want)
    assert await api.state.retrieval.store.count_file(b) == len(want)
    check_settled(snapshot, ["b.md"])
    # The client's retry then stores each chunk once.
    await create_rag(api, {"id": b, "chunk_capacity": 12})
    assert await searchable(api) == sorted(pairs(B))
    assert await api.state.retrieval.store.count_file(b) == len(pairs(B))


async def test_crashed_delete_is_finished_at_start_up(
        open_server: OpenServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, snapshot = tmp_path / "data", tmp_path / "crashed"
    api = await open_server(data)
    b = await with_b(api)
    crash = Crash(data, snapshot)
    crash_in_delete(monkeypatch, api, crash, after=True)  # points gone, the record not yet
    resp = await api.request("DELETE", f"/v1/files/{b}")
    assert crash.fired and resp.status == 500
    monkeypatch.undo()

    api = await open_server(snapshot)
    assert await listed(api) == []
    assert await searchable(api) == []
    assert await api.state.retrieval.store.count_file(b) == 0
    check_settled(snapshot, [])


async def test_points_are_searchable_only_once_all_are_written(
        open_server: OpenServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While an ingestion writes its points (in batches, each its own store call, so
    searches run in between), searches see the file's previous chunks, never a mix."""
    from serving.retrieval import service

    api = await open_server(tmp_path / "data")
    b = await with_b(api)
    store = api.state.retrieval.store
    seen: list[tuple[list[str], list[str]]] = []  # (files listed, chunks searchable)
    real = store.upsert

    async def upsert(*args: Any, **kw: Any) -> Any:
        done = await real(*args, **kw)
        seen.append((await listed(api), await searchable(api)))
        return done
    monkeypatch.setattr(service, "UPSERT_BATCH", 2)
    monkeypatch.setattr(store, "upsert", upsert)
    await create_rag(api, {"id": b, "chunk_capacity": 12})
    assert seen == [(["b.md"], sorted(B))] * 3
    assert await searchable(api) == sorted(pairs(B))
    seen.clear()  # a new file's first ingestion: not searchable until complete
    resp = await post_form(api, "/v1/create/rag", ("a.md", doc(A)), chunk_capacity="8")
    assert resp.status == 200, resp.text
    assert seen == [(["b.md"], sorted(pairs(B)))] * 5
    assert await listed(api) == ["a.md", "b.md"]
    assert await searchable(api) == sorted(pairs(B) + A)


async def test_a_data_directory_from_before(open_server: OpenServer, tmp_path: Path) -> None:
    """Records without an ingestion state and points without an ingestion (what earlier
    versions wrote) are served; ingesting such a file again replaces its points; a record
    cut short by a crash in an earlier version is removed at start-up with its content."""
    import uuid

    from qdrant_client import QdrantClient, models

    data = tmp_path / "data"
    (data / "files").mkdir(parents=True)
    b, cut = f"file_{'b' * 32}", f"file_{'c' * 32}"
    (data / "files" / f"{b}.data").write_bytes(doc(B))
    (data / "files" / f"{b}.json").write_text(json.dumps({
        "id": b, "bytes": len(doc(B)), "created_at": 1700000000, "filename": "b.md",
        "object": "file", "purpose": "assistants"}))
    (data / "files" / f"{cut}.data").write_bytes(doc(A))
    (data / "files" / f"{cut}.json").write_text('{"id": "file_cc')
    client = QdrantClient(path=str(data / "qdrant"))
    client.create_collection("default", vectors_config=models.VectorParams(
        size=32, distance=models.Distance.COSINE))
    client.upsert("default", points=[
        models.PointStruct(id=str(uuid.uuid4()), vector=[1.0] * 32,
                           payload={"source": s, "file_id": f, "chunk_index": 0})
        for s, f in [*((p, b) for p in B), (A[0], cut)]], wait=True)
    client.close()

    api = await open_server(data)
    assert await listed(api) == ["b.md"]
    assert await searchable(api) == sorted(B)
    check_settled(data, ["b.md"])
    await create_rag(api, {"id": b, "chunk_capacity": 12})
    assert await searchable(api) == sorted(pairs(B))


async def test_a_failed_write_is_rolled_back(open_server: OpenServer, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The store failing midway (a Qdrant server gone): 503, and the points written are
    removed again once it answers; a clean-up that fails too is hidden, then done later."""
    from qdrant_client.http.exceptions import ResponseHandlingException

    data = tmp_path / "data"
    api = await open_server(data)
    b = await with_b(api)
    client = qdrant(api)
    real_upsert, real_delete = client.upsert, client.delete

    def upsert(collection_name: str, points: list[Any], **kw: Any) -> Any:
        real_upsert(collection_name, points=points[:3], **kw)
        raise ResponseHandlingException(ConnectionError("connection refused"))
    monkeypatch.setattr(client, "upsert", upsert)
    resp = await api.post("/v1/create/rag", {"id": b, "chunk_capacity": 12})
    assert resp.status == 503 and resp.json["error"]["code"] == "vector_store_unavailable"
    assert await searchable(api) == sorted(B)
    assert await api.state.retrieval.store.count_file(b) == len(B)
    check_settled(data, ["b.md"])

    def delete(*args: Any, **kw: Any) -> Any:
        raise ResponseHandlingException(ConnectionError("connection refused"))
    monkeypatch.setattr(client, "delete", delete)  # the rollback fails too
    resp = await api.post("/v1/create/rag", {"id": b, "chunk_capacity": 12})
    assert resp.status == 503
    assert await searchable(api) == sorted(B)  # the 3 new points stay hidden
    assert await api.state.retrieval.store.count_file(b) == len(B) + 3
    monkeypatch.setattr(client, "upsert", real_upsert)
    monkeypatch.setattr(client, "delete", real_delete)
    await create_rag(api, {"id": b, "chunk_capacity": 12})  # the store is back: a retry
    assert await searchable(api) == sorted(pairs(B))
    assert await api.state.retrieval.store.count_file(b) == len(pairs(B))
    check_settled(data, ["b.md"])


async def test_start_up_with_the_store_failing_keeps_partial_points_hidden(
        open_server: OpenServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.retrieval.store import StoreUnavailable, VectorStore

    data, snapshot = tmp_path / "data", tmp_path / "crashed"
    api = await open_server(data)
    b = await with_b(api)
    crash = Crash(data, snapshot)
    crash_in_upsert(monkeypatch, api, crash)
    assert (await api.post("/v1/create/rag", {"id": b, "chunk_capacity": 12})).status == 500
    monkeypatch.undo()

    async def down(*args: Any, **kw: Any) -> NoReturn:
        raise StoreUnavailable("the vector store is down")
    monkeypatch.setattr(VectorStore, "delete_points", down)
    api = await open_server(snapshot)  # starts: the clean-up waits
    assert await searchable(api) == sorted(B)
    assert await api.state.retrieval.store.count_file(b) == len(B) + 3
    monkeypatch.undo()
    await create_rag(api, {"id": b, "chunk_capacity": 8})  # a retry settles it
    assert await searchable(api) == sorted(B)
    assert await api.state.retrieval.store.count_file(b) == len(B)
    check_settled(snapshot, ["b.md"])
