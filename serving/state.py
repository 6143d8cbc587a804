"""What every handler needs: the served models and the server's settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine import AsyncEngine, AsyncSentenceEncoder
from serving.errors import model_not_found

if TYPE_CHECKING:
    from serving.retrieval.service import RetrievalService


@dataclass
class ServedModel:
    """One engine, reachable under its name and any aliases."""

    name: str
    engine: AsyncEngine
    max_model_len: int
    aliases: list[str] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))
    fallback: str | None = None  # a served model for prompts longer than this one's context


@dataclass
class ServedEncoder:
    """An embedding-only model (a BERT sentence encoder), served beside the chat models."""

    name: str
    encoder: AsyncSentenceEncoder
    aliases: list[str] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def max_model_len(self) -> int:
        return self.encoder.max_len


@dataclass
class ServerSettings:
    api_key: str | None = None
    max_body_bytes: int = 16 << 20
    max_waiting_requests: int = 256  # beyond this, 503 with Retry-After
    log_prompts: bool = False
    shutdown_grace_s: float = 10.0


@dataclass
class ServerState:
    models: list[ServedModel]
    settings: ServerSettings = field(default_factory=ServerSettings)
    ready: bool = True
    encoders: list[ServedEncoder] = field(default_factory=list)
    retrieval: RetrievalService | None = None  # the RAG endpoints; None: not configured

    def resolve(self, name: str | None) -> ServedModel:
        """The model a request names (its name or an alias); 404 model_not_found otherwise."""
        for m in self.models:
            if name == m.name or name in m.aliases:
                return m
        raise model_not_found(str(name))

    def resolve_embedder(self, name: str | None) -> ServedEncoder | ServedModel:
        """An embedding model, or a chat model (pooled hidden states); 404 otherwise."""
        for e in self.encoders:
            if name == e.name or name in e.aliases:
                return e
        return self.resolve(name)
