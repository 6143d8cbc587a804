"""Start-up of the embedding model and the retrieval store beside the chat models.

The default embedding model is a convenience: when it is not fetched the server logs how
to fetch it and serves without embeddings and retrieval. One named by flag must load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from engine import AsyncSentenceEncoder
from serving.cli import CLIError, ServePlan
from serving.retrieval.service import RetrievalService, RetrievalSettings, open_vector_store
from serving.retrieval.store import VectorStore
from serving.served import ServedEncoder

logger = logging.getLogger("serving")

Closer = Callable[[], Awaitable[None]]


async def open_store(settings: RetrievalSettings, closers: list[Closer]) -> VectorStore:
    """The vector store, opened last of all: a start-up that fails earlier (a bad flag, a
    model that does not load) creates nothing under the data directory."""
    try:
        store = await asyncio.to_thread(open_vector_store, settings)
    except (RuntimeError, ValueError, OSError) as e:  # e.g. another process holds the folder
        where = settings.qdrant_url or settings.data_dir
        raise CLIError(f"cannot open the retrieval store at {where}: {e}") from None
    closers.append(store.close)
    return store


async def load_embeddings(plan: ServePlan, closers: list[Closer]
                          ) -> tuple[list[ServedEncoder], RetrievalService | None]:
    """The served encoders and the retrieval service over the store (opened after the
    encoder loads); `closers` collects their shutdowns as they come, so that a failure
    midway still releases what was opened."""
    spec = plan.embedding
    if spec is None or plan.retrieval is None:
        return [], None
    logger.info("loading embedding model %s as %s", spec.model, spec.names[0])
    try:
        encoder = await asyncio.to_thread(AsyncSentenceEncoder, spec.model)
    except FileNotFoundError as e:
        if spec.explicit:
            raise
        logger.warning("no embedding model: %s; /v1/embeddings serves the chat models only "
                       "and retrieval is off", e)
        return [], None
    closers.append(encoder.shutdown)
    store = await open_store(plan.retrieval, closers)
    served = ServedEncoder(spec.names[0], encoder, spec.names[1:])
    s = encoder.summary()
    logger.info("embedding model %s: %.2fM parameters, %d-d, %s pooling%s, max %d tokens",
                served.name, s["parameters"] / 1e6, s["dim"], s["pooling"],
                " + normalize" if s["normalize"] else "", s["max_len"])
    settings = plan.retrieval
    # Settles what a crash left before anything is served; closed through the store's closer.
    service = await RetrievalService.open(settings, served, store)
    logger.info("retrieval: files and %s under %s", "Qdrant at " + settings.qdrant_url
                if settings.qdrant_url else "the local vector store", settings.data_dir)
    return [served], service
