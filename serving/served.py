"""What a name in a request resolves to: a generating engine or a sentence encoder."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

from engine import AsyncEngine, AsyncSentenceEncoder
from serving.version import system_fingerprint


@dataclass
class ServedModel:
    """One engine, reachable under its name and any aliases."""

    name: str
    engine: AsyncEngine
    max_model_len: int
    aliases: list[str] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))
    fallback: str | None = None  # a served model for prompts longer than this one's context

    @functools.cached_property
    def fingerprint(self) -> str:
        """The `system_fingerprint` of this model's answers."""
        core = self.engine.core
        return system_fingerprint(core.config.model, core.config.dtype, core.weights_kind)


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
