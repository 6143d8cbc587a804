"""RetrievalService: files -> chunks -> embeddings -> the vector store, and queries back.

It embeds with one served BERT encoder (its tokenizer also measures chunks) and owns the
file store and the vector store under the server's data directory; the server opens it once
at start-up and closes it at shutdown (qdrant's local mode locks its folder meanwhile).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.retrieval.chunking import check_sizes, chunk_text
from serving.retrieval.files import FileRecord, FileStore
from serving.retrieval.store import Hit, VectorStore, check_collection_name
from serving.served import ServedEncoder

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

    async def ingest(self, file_id: str, collection: str | None = None,
                     capacity: int | None = None, overlap: int | None = None) -> Ingested:
        collection = collection or self.settings.collection
        check_collection_name(collection)
        record = self.files.get(file_id)
        # Reading and tokenizing a long file takes a while: off the event loop.
        chunks = await asyncio.to_thread(self.chunk_file, file_id, capacity, overlap)
        if not chunks:
            raise ValueError(f"file {record.filename!r} holds no text to embed")
        vectors, tokens = await self.embed(chunks)
        payloads: list[dict[str, Any]] = [
            {"source": c, "file_id": record.id, "filename": record.filename, "chunk_index": i}
            for i, c in enumerate(chunks)
        ]
        points = await self.store.add(collection, vectors, payloads)
        return Ingested(record, collection, len(chunks), points, tokens)

    async def retrieve(self, query: str, collection: str | None = None,
                       limit: int | None = None,
                       score_threshold: float | None = None) -> tuple[list[Hit], int]:
        """Hits best first and the query's token count. Raises CollectionNotFound."""
        collection = collection or self.settings.collection
        check_collection_name(collection)
        vectors, tokens = await self.embed([query])
        hits = await self.store.search(collection, vectors[0], limit or self.settings.limit,
                                       score_threshold)
        return hits, tokens

    async def delete_file(self, file_id: str) -> tuple[FileRecord, int]:
        record = self.files.get(file_id)
        removed = await self.store.delete_file(file_id)
        self.files.delete(file_id)
        return record, removed

    async def close(self) -> None:
        await self.store.close()
