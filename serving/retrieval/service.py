"""RetrievalService: files -> chunks -> embeddings -> the vector store, and queries back.

It embeds with one served BERT encoder (its tokenizer also measures chunks) and owns the
file store and the vector store under the server's data directory; the server opens it once
at start-up (`open`) and closes it at shutdown (qdrant's local mode locks its folder meanwhile).

Ingestion is all-or-nothing for searches, across crashes, and a retry stores nothing twice:
- An ingestion is named by its digest (the embedding model and the chunks' hashes); a point's
  id comes from (file id, digest, chunk index, chunk hash), so writing the same chunks again
  replaces the points, and the point's payload names its ingestion.
- The file's record is marked `ingesting` in that collection before the first point is
  written; while so marked, searches skip the file's points but those of its `ready`
  ingestion. Once all are written the record names the new ingestion `ready` (the commit),
  the file's other points in the collection are deleted, and the mark is cleared.
- A file uploaded by /v1/create/rag is listed from its commit on; deletion marks the record
  before deleting points. Start-up (`recover`) settles what a crash left: it deletes the
  points of unfinished ingestions (or the old ones after a commit), and the files of
  unanswered uploads and unfinished deletions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from serving.retrieval.chunking import check_sizes, chunk_text
from serving.retrieval.files import (
    DELETING,
    INGESTING,
    READY,
    FileError,
    FileRecord,
    FileStore,
    Ingestion,
)
from serving.retrieval.store import INGESTION, Hit, VectorStore, check_collection_name
from serving.served import ServedEncoder

logger = logging.getLogger("serving")

UPSERT_BATCH = 64  # points per store call: searches and other ingestions run between calls
_POINT_IDS = uuid.UUID("6f1c3a52-9d7e-4b0a-8c55-2e9f1b7d4a10")  # the namespace of point ids

DEFAULT_RAG_PROMPT = (
    "Use the following pieces of context to answer the user's question.\n"
    "If you don't know the answer, just say that you don't know, don't try to make up an "
    "answer.\n----------------\n"
)


@dataclass(frozen=True)
class RetrievalSettings:
    data_dir: Path
    qdrant_url: str | None = None  # None: qdrant's local mode under data_dir/qdrant
    collection: str = "default"
    chunk_capacity: int = 100  # tokens of the embedding model
    chunk_overlap: int = 16
    limit: int = 5
    score_threshold: float = 0.4
    rag_chat: bool = False  # add retrieved context to every chat request unless it opts out
    rag_prompt: str = DEFAULT_RAG_PROMPT

    def __post_init__(self) -> None:
        check_collection_name(self.collection)
        check_sizes(self.chunk_capacity, self.chunk_overlap)
        if self.limit < 1:
            raise ValueError(f"the retrieval limit must be at least 1, got {self.limit}")


def open_vector_store(settings: RetrievalSettings) -> VectorStore:
    """The Qdrant server at qdrant_url, or the local store under data_dir/qdrant (which
    fails here when another process holds it)."""
    if settings.qdrant_url:
        return VectorStore(url=settings.qdrant_url)
    return VectorStore(path=settings.data_dir / "qdrant")


def ingestion_digest(model: str, chunks: list[str]) -> str:
    h = hashlib.sha256(model.encode())
    for c in chunks:
        h.update(hashlib.sha256(c.encode()).digest())
    return h.hexdigest()[:32]


def point_ids(file_id: str, digest: str, chunks: list[str]) -> list[str]:
    return [str(uuid.uuid5(_POINT_IDS, f"{file_id}/{digest}/{i}/"
                           f"{hashlib.sha256(c.encode()).hexdigest()}"))
            for i, c in enumerate(chunks)]


@dataclass
class Ingested:
    file: FileRecord
    collection: str
    chunks: int
    points: int
    prompt_tokens: int


class RetrievalService:
    def __init__(self, settings: RetrievalSettings, encoder: ServedEncoder,
                 store: VectorStore | None = None) -> None:
        self.settings = settings
        self.encoder = encoder
        self.files = FileStore(settings.data_dir / "files")
        self.store = store or open_vector_store(settings)
        # collection -> file id -> the ingestion searches may return of that file (None:
        # none), for each file with an ingestion under way there
        self._hidden: dict[str, dict[str, str | None]] = {}
        self._deleting: set[str] = set()  # files whose deletion failed midway: none shown
        self._locks: dict[str, asyncio.Lock] = {}  # one ingestion or deletion of a file at once

    @classmethod
    async def open(cls, settings: RetrievalSettings, encoder: ServedEncoder,
                   store: VectorStore | None = None) -> RetrievalService:
        """The service, with what a crash left settled (before anything is served)."""
        service = cls(settings, encoder, store)
        await service.recover()
        return service

    @property
    def max_chunk_capacity(self) -> int:
        return self.encoder.encoder.max_len - 2  # room for [CLS] and [SEP]

    def check_options(self, collection: str | None, capacity: int | None,
                      overlap: int | None) -> tuple[int, int]:
        """(capacity, overlap) with the defaults filled in; ValueError for bad ones."""
        if collection is not None:
            check_collection_name(collection)
        if capacity is None:  # the default, held within what the encoder takes
            capacity = min(self.settings.chunk_capacity, self.max_chunk_capacity)
        if overlap is None:  # the default overlap, shrunk for a capacity smaller than it
            overlap = min(self.settings.chunk_overlap, capacity // 4)
        check_sizes(capacity, overlap)
        if capacity > self.max_chunk_capacity:
            raise ValueError(f"chunk_capacity ({capacity}) exceeds what the embedding model "
                             f"takes ({self.max_chunk_capacity} tokens)")
        return capacity, overlap

    def chunk_file(self, file_id: str, capacity: int | None = None,
                   overlap: int | None = None) -> list[str]:
        """Raises FileError for an unknown file, ValueError for bad sizes."""
        capacity, overlap = self.check_options(None, capacity, overlap)
        return chunk_text(self.files.read_text(file_id), self.encoder.encoder.token_offsets,
                          capacity, overlap)

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        outs = await self.encoder.encoder.embed(texts, truncate=True)  # type: ignore[arg-type]
        return [o.embedding for o in outs], sum(len(o.prompt_token_ids) for o in outs)

    def _lock(self, file_id: str) -> asyncio.Lock:
        return self._locks.setdefault(file_id, asyncio.Lock())

    async def ingest(self, file_id: str, collection: str | None = None,
                     capacity: int | None = None, overlap: int | None = None) -> Ingested:
        """Chunk, embed and store an uploaded file; again, it replaces the file's points in
        that collection. Raises FileError for an unknown file, ValueError for bad options."""
        collection = collection or self.settings.collection
        check_collection_name(collection)
        self.files.get(file_id)  # a 404 before waiting for another ingestion of the file
        async with self._lock(file_id):
            return await self._ingest(self.files.get(file_id), collection, capacity, overlap)

    async def upload_and_ingest(self, filename: str, content: bytes,
                                collection: str | None = None, capacity: int | None = None,
                                overlap: int | None = None) -> Ingested:
        """Store an upload and ingest it: the file is listed once its points are all
        stored, and a failure (or a crash, at the next start) leaves nothing of it."""
        collection = collection or self.settings.collection
        self.check_options(collection, capacity, overlap)  # before storing anything
        # Decoding and writing a large file: off the event loop.
        record = await asyncio.to_thread(self.files.save, filename, content, status=INGESTING)
        try:
            async with self._lock(record.id):
                return await self._ingest(record, collection, capacity, overlap)
        except BaseException:  # a failure, or the client gone (cancelled)
            await _quietly(self._remove(record.id), f"removing the failed upload {record.id}")
            raise

    async def _ingest(self, record: FileRecord, collection: str, capacity: int | None,
                      overlap: int | None) -> Ingested:
        capacity, overlap = self.check_options(collection, capacity, overlap)
        # Reading and tokenizing a long file takes a while: off the event loop.
        chunks = await asyncio.to_thread(self.chunk_file, record.id, capacity, overlap)
        if not chunks:
            raise ValueError(f"file {record.filename!r} holds no text to embed")
        vectors, tokens = await self.embed(chunks)
        digest = ingestion_digest(self.encoder.name, chunks)
        ids = point_ids(record.id, digest, chunks)
        payloads: list[dict[str, Any]] = [
            {"source": c, "file_id": record.id, "filename": record.filename,
             "chunk_index": i, INGESTION: digest}
            for i, c in enumerate(chunks)
        ]
        await self.store.prepare(collection, len(vectors[0]))
        shown = record.collections.get(collection, Ingestion()).ready
        record = self.files.put(record.with_collection(collection, Ingestion(shown, digest)))
        self._hidden.setdefault(collection, {})[record.id] = shown
        try:
            for i in range(0, len(ids), UPSERT_BATCH):
                end = i + UPSERT_BATCH
                await self.store.upsert(collection, ids[i:end], vectors[i:end], payloads[i:end])
            # The commit: the new points are the file's (and an uploaded file is listed).
            record = self.files.put(record.with_collection(
                collection, Ingestion(digest, digest), status=READY))
            self._hidden[collection][record.id] = digest
        finally:  # on failure this rolls back to the old points; else it removes them
            await _quietly(self._settle(record.id, collection),
                           f"settling {record.id} in {collection!r}")
        return Ingested(self.files.load(record.id), collection, len(chunks), len(ids), tokens)

    async def _settle(self, file_id: str, collection: str) -> None:
        """End an ingestion under way (or left by a crash): delete the file's points in
        the collection but those of its ready ingestion, then clear the mark."""
        state = self.files.load(file_id).collections.get(collection, Ingestion())
        await self.store.delete_points(collection, file_id, keep=state.ready)
        record = self.files.load(file_id)
        self.files.put(record.with_collection(collection, Ingestion(state.ready)))
        self._hidden.get(collection, {}).pop(file_id, None)

    async def retrieve(self, query: str, collection: str | None = None,
                       limit: int | None = None,
                       score_threshold: float | None = None) -> tuple[list[Hit], int]:
        """Hits best first and the query's token count. Raises CollectionNotFound."""
        collection = collection or self.settings.collection
        check_collection_name(collection)
        vectors, tokens = await self.embed([query])
        hidden = {**self._hidden.get(collection, {}), **dict.fromkeys(self._deleting)}
        hits = await self.store.search(collection, vectors[0], limit or self.settings.limit,
                                       score_threshold, hidden)
        return hits, tokens

    async def delete_file(self, file_id: str) -> tuple[FileRecord, int]:
        """Delete a file and its points. It is gone for clients from the start: a deletion
        that fails midway is retried by the next DELETE, or else at the next start."""
        async with self._lock(file_id):
            record = self.files.load(file_id)
            if record.status == INGESTING:  # not uploaded yet, as far as clients know
                raise FileError(f"No file with id {file_id!r}", 404, "file_not_found")
            self.files.put(replace(record, status=DELETING))
            self._deleting.add(file_id)
            removed = await self._remove(file_id)
        return record, removed

    async def _remove(self, file_id: str) -> int:
        """Delete a file's points everywhere, then the file; the count of points."""
        removed = await self.store.delete_file(file_id)
        self.files.delete(file_id)
        self._deleting.discard(file_id)
        self._locks.pop(file_id, None)  # a waiter holds its own reference, and finds no file
        return removed

    async def recover(self) -> None:
        """Settle what a crash left, before serving: unfinished ingestions are rolled back
        (or finished, when committed), unanswered uploads and unfinished deletions done.
        What cannot be settled now (a Qdrant server down) stays hidden from searches."""
        for path in self.files.sweep():
            logger.warning("retrieval: removed %s, left by an interrupted upload", path.name)
        for file_id in self.files.unreadable():  # cut short by a crash (before atomic writes)
            self._deleting.add(file_id)
            if await _quietly(self._remove(file_id), f"removing {file_id}"):
                logger.warning("retrieval: removed file %s, whose record could not be read",
                               file_id)
        for record in self.files.records():
            if record.status != READY:
                self._deleting.add(record.id)
                what = "deletion" if record.status == DELETING else "upload"
                if await _quietly(self._remove(record.id), f"removing {record.id}"):
                    logger.warning("retrieval: removed file %s (%s): its %s was interrupted",
                                   record.id, record.filename, what)
                continue
            for collection, state in record.collections.items():
                if state.ingesting is None:
                    continue
                self._hidden.setdefault(collection, {})[record.id] = state.ready
                if await _quietly(self._settle(record.id, collection),
                                  f"settling {record.id} in {collection!r}"):
                    logger.warning("retrieval: settled an interrupted ingestion of file %s "
                                   "(%s) in %r: %s", record.id, record.filename, collection,
                                   "completed" if state.ready == state.ingesting
                                   else "rolled back")

    async def close(self) -> None:
        await self.store.close()


async def _quietly(work: Awaitable[Any], what: str) -> bool:
    """Clean-up: its failure is logged, not raised (over a first failure, or at start-up);
    what it leaves is hidden from searches and settled at the next start. True: it worked."""
    try:
        await work
    except Exception:
        logger.exception("retrieval: %s failed", what)
        return False
    return True
