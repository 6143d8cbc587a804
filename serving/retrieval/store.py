"""The vector store: qdrant-client in its embedded local mode (a folder, no server to run)
or against a Qdrant server by URL. Collections are cosine-distance, one per name.

Every call goes through one worker thread: the local mode is plain Python over numpy and
blocks, and one thread keeps its on-disk state free of concurrent writers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ApiException

_COLLECTION = re.compile(r"[A-Za-z0-9_-]{1,64}")
INGESTION = "ingestion"  # the payload key naming the ingestion that wrote a point


class CollectionNotFound(LookupError):
    pass


class StoreUnavailable(RuntimeError):
    """The Qdrant server could not be reached or failed: the client should retry later."""


def check_collection_name(name: str) -> None:
    if not _COLLECTION.fullmatch(name):
        raise ValueError(f"collection_name {name!r} must be 1-64 letters, digits, '_' or '-'")


@dataclass(frozen=True)
class Hit:
    source: str
    score: float


class VectorStore:
    """Open with a local folder (`path`) or a server `url`; close once at shutdown."""

    def __init__(self, path: Path | None = None, url: str | None = None) -> None:
        if (path is None) == (url is None):
            raise ValueError("give exactly one of a local path and a Qdrant URL")
        self.location = str(url or path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant")
        # Local mode locks the folder: a second process opening it fails here, clearly.
        self._client = self._executor.submit(
            lambda: QdrantClient(url=url) if url else QdrantClient(path=str(path))).result()

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        except ApiException as e:  # a server that is down, unreachable or failing
            raise StoreUnavailable(f"the vector store at {self.location} failed: {e}") from e

    async def exists(self, collection: str) -> bool:
        return await self._run(self._client.collection_exists, collection)

    async def prepare(self, collection: str, dim: int) -> None:
        """Create the collection on first use (sized to the vectors), or check its size."""
        def work() -> None:
            if not self._client.collection_exists(collection):
                self._client.create_collection(collection, vectors_config=models.VectorParams(
                    size=dim, distance=models.Distance.COSINE))
            size = self._client.get_collection(collection).config.params.vectors.size
            if size != dim:
                raise ValueError(f"collection {collection!r} holds {size}-d vectors; these are "
                                 f"{dim}-d (another embedding model?)")
        await self._run(work)

    async def upsert(self, collection: str, ids: list[str], vectors: list[list[float]],
                     payloads: list[dict[str, Any]]) -> int:
        """Write points (a point with an id already stored replaces it); how many."""
        points = [models.PointStruct(id=i, vector=v, payload=p)
                  for i, v, p in zip(ids, vectors, payloads, strict=True)]
        await self._run(self._client.upsert, collection, points=points, wait=True)
        return len(points)

    async def search(self, collection: str, vector: list[float], limit: int,
                     score_threshold: float | None,
                     hidden: Mapping[str, str | None] | None = None) -> list[Hit]:
        """`hidden`: file id -> the ingestion whose points may be returned (None: none of
        the file's), for files with an ingestion under way."""
        flt = models.Filter(must_not=[_not_of(f, keep) for f, keep in hidden.items()]
                            ) if hidden else None

        def work() -> list[Hit]:
            if not self._client.collection_exists(collection):
                raise CollectionNotFound(collection)
            found = self._client.query_points(collection, query=vector, limit=limit,
                                              score_threshold=score_threshold,
                                              query_filter=flt, with_payload=True).points
            return [Hit(str((p.payload or {}).get("source", "")), float(p.score)) for p in found]
        return await self._run(work)

    async def count_file(self, file_id: str) -> int:
        """Points of one file, over every collection."""
        def work() -> int:
            names = [c.name for c in self._client.get_collections().collections]
            return sum(self._client.count(n, count_filter=_of_file(file_id), exact=True).count
                       for n in names)
        return await self._run(work)

    async def delete_points(self, collection: str, file_id: str, keep: str | None) -> int:
        """Delete one file's points in one collection but those of ingestion `keep`
        (None: all of them); how many there were."""
        flt = _not_of(file_id, keep)

        def work() -> int:
            if not self._client.collection_exists(collection):
                return 0
            n = self._client.count(collection, count_filter=flt, exact=True).count
            if n:
                self._client.delete(collection, points_selector=models.FilterSelector(
                    filter=flt), wait=True)
            return n
        return await self._run(work)

    async def delete_file(self, file_id: str) -> int:
        """Delete one file's points from every collection; how many there were."""
        def work() -> int:
            total = 0
            for c in self._client.get_collections().collections:
                flt = _of_file(file_id)
                total += self._client.count(c.name, count_filter=flt, exact=True).count
                self._client.delete(c.name, points_selector=models.FilterSelector(filter=flt),
                                    wait=True)
            return total
        return await self._run(work)

    async def close(self) -> None:
        await self._run(self._client.close)
        self._executor.shutdown(wait=True)


def _of_file(file_id: str) -> models.Filter:
    return models.Filter(must=[_is("file_id", file_id)])


def _not_of(file_id: str, keep: str | None) -> models.Filter:
    """The file's points but those of ingestion `keep` (all of them when None)."""
    return models.Filter(must=[_is("file_id", file_id)],
                         must_not=[_is(INGESTION, keep)] if keep else None)


def _is(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))
