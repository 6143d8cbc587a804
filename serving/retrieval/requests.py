"""Request bodies of the retrieval endpoints (LlamaEdge's shapes, strictly typed)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serving.errors import bad_request


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class ChunkOptions(_Strict):
    chunk_capacity: int | None = Field(None, ge=1)
    chunk_overlap: int | None = Field(None, ge=0)


class ChunksRequest(ChunkOptions):
    id: str
    filename: str | None = None  # LlamaEdge sends it; when given it must match the file's


class CreateRagRequest(ChunkOptions):
    """The JSON form of /v1/create/rag, for a file uploaded before."""

    id: str
    collection_name: str | None = None


class SearchOptions(_Strict):
    collection_name: str | None = None
    limit: int | None = Field(None, ge=1, le=100)
    score_threshold: float | None = Field(None, ge=-1.0, le=1.0)


class RetrieveRequest(SearchOptions):
    messages: list[dict[str, Any]] = Field(min_length=1)
    model: str | None = None


class ChatRag(SearchOptions):
    """`"rag": true | false | {collection_name, limit, score_threshold}` on a chat request."""

    enabled: bool = True


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI's content parts: keep the text ones
        return "\n".join(p["text"] for p in content
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def last_user_text(messages: list[dict[str, Any]], param: str = "messages") -> str:
    """The query: the last user message's text (400 when there is none or it is blank)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            text = message_text(message)
            if not text.strip():
                raise bad_request("The last user message is empty", param)
            return text
    raise bad_request("messages hold no user message to search with", param)
