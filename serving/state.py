"""What every handler needs: the served models and the server's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from serving.errors import model_not_found
from serving.retrieval.service import RetrievalService
from serving.served import ServedEncoder, ServedModel
from serving.tools.formats import DEFAULT_MAX_TOOL_CALLS


@dataclass
class ServerSettings:
    api_key: str | None = None
    max_body_bytes: int = 16 << 20
    max_waiting_requests: int = 256  # beyond this, 503 with Retry-After
    log_prompts: bool = False
    shutdown_grace_s: float = 10.0
    max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS  # per assistant message, by grammar


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
