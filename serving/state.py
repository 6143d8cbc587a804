"""What every handler needs: the served models and the server's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from serving.errors import model_not_found
from serving.retrieval.service import RetrievalService
from serving.served import ServedEncoder, ServedModel
from serving.tools.formats import DEFAULT_MAX_TOOL_CALLS


@dataclass
class ServerSettings:
    api_key: str | None = None
    max_body_bytes: int = 16 << 20
    # Sequences (prompts x n / best_of) that may wait for a model; beyond, 503 with
    # Retry-After (a request larger than this alone: 400).
    max_waiting_requests: int = 256
    max_prompts_per_request: int = 64  # prompts in one /v1/completions request; beyond, 400
    log_prompts: bool = False
    shutdown_grace_s: float = 10.0
    # Where stored state lives (retrieval, stored Responses); None: kept in memory only.
    data_dir: Path | None = None
    # Slow or idle clients (serving/connections.py): a connection must finish a request's
    # head this long after connecting or after its previous response; a body must arrive
    # whole this long after its head; connections past the cap get a 503 and are closed.
    header_timeout_s: float = 30.0
    body_timeout_s: float = 120.0
    max_connections: int = 512
    max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS  # per assistant message, by grammar


@dataclass
class ServerState:
    models: list[ServedModel]
    settings: ServerSettings = field(default_factory=ServerSettings)
    ready: bool = True
    encoders: list[ServedEncoder] = field(default_factory=list)
    retrieval: RetrievalService | None = None  # the RAG endpoints; None: not configured
    in_flight: int = 0  # HTTP requests being handled now (shutdown waits for them)

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
