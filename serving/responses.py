"""Response bodies as pydantic models: the shapes OpenAI clients parse.

Handlers build these and send `model_dump()`; a chunk's `usage` key is present only when
the client asked for usage (PROTOCOL.md), which `chunk_body` takes care of.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

MIN_LOGPROB = -9999.0  # JSON has no -Infinity; a masked token gets this instead


@dataclass
class ResponseMeta:
    """What every response body and chunk of one request repeats."""

    id: str
    model: str
    system_fingerprint: str  # OpenAI's spec: a string, never null
    created: int = field(default_factory=lambda: int(time.time()))

    def ids(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "model": self.model,
                "system_fingerprint": self.system_fingerprint}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else MIN_LOGPROB


def json_response(body: dict[str, Any]) -> web.Response:
    return web.json_response(body, dumps=lambda b: json.dumps(b, ensure_ascii=False))


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = Field(
        default=None, exclude_if=lambda v: v is None
    )


class _Body(BaseModel):
    id: str
    created: int
    model: str
    system_fingerprint: str


def _absent_if_none(value: Any) -> bool:
    return value is None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None  # OpenAI's spec requires the key; this server never refuses
    # Present only when the model called something (OpenAI clients read either shape).
    tool_calls: list[dict[str, Any]] | None = Field(default=None, exclude_if=_absent_if_none)
    function_call: dict[str, Any] | None = Field(default=None, exclude_if=_absent_if_none)


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None
    stop_reason: str | int | None = None


class ChatCompletion(_Body):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChatChunkChoice(BaseModel):
    index: int
    delta: dict[str, Any]  # {"role", "content"} first, then {"content"} or {} (exact keys matter)
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None


class ChatCompletionChunk(_Body):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None


class Completion(_Body):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(_Body):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


def chunk_body(chunk: ChatCompletionChunk | CompletionChunk, include_usage: bool) -> dict[str, Any]:
    """With include_usage every chat chunk carries "usage" (null until the last); else none
    does. Completion chunks pass include_usage only for the last, usage-only chunk: OpenAI's
    completion schema has no null usage."""
    return chunk.model_dump(exclude=None if include_usage else {"usage"})
