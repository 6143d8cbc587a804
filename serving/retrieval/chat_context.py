"""Retrieved context for chat completions, as LlamaEdge's RAG server adds it.

A chat request may carry `"rag": true`, `"rag": false`, or `"rag": {"collection_name",
"limit", "score_threshold"}`; without the field the server's default applies (--rag-chat).
When on, the last user message is searched and the chunks found are appended to the system
message (one is added when the conversation has none) after the RAG prompt. The chunks
used are reported back (`retrieved_chunks`, PROTOCOL.md), so a client can show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.errors import APIError, bad_request
from serving.requests import parse_request
from serving.retrieval.handlers import client_errors
from serving.retrieval.requests import ChatRag, last_user_text
from serving.state import ServerState


def rag_option(body: dict[str, Any], default: bool) -> ChatRag:
    value = body.get("rag")
    if value is None:
        return ChatRag(enabled=default)
    if isinstance(value, bool):
        return ChatRag(enabled=value)
    if isinstance(value, dict):
        try:
            return parse_request(ChatRag, value)
        except APIError as e:  # name the field as the client wrote it: rag.limit, ...
            param = f"rag.{e.param}" if e.param else "rag"
            raise bad_request(f"`rag`: {e.message}", param) from None
    raise bad_request("Invalid type for `rag`: expected a boolean or an object", "rag")


def add_to_system(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        content = out[0].get("content")
        if isinstance(content, list):
            out[0]["content"] = [*content, {"type": "text", "text": "\n\n" + text}]
        else:
            out[0]["content"] = f"{content}\n\n{text}" if content else text
        return out
    return [{"role": "system", "content": text}, *out]


@dataclass
class RagContext:
    messages: list[dict[str, Any]]  # the conversation, context added when any was found
    # The chunks added ({"source", "score"}, best first); None when retrieval was off.
    chunks: list[dict[str, Any]] | None = None


async def with_retrieved_context(state: ServerState, body: dict[str, Any],
                                 messages: list[dict[str, Any]]) -> RagContext:
    """`messages` with retrieved context in the system message, when the request (its
    parsed JSON `body`) asks."""
    svc = state.retrieval
    option = rag_option(body, svc is not None and svc.settings.rag_chat)
    if not option.enabled:
        return RagContext(messages)
    if svc is None:
        raise bad_request("rag was asked for, but retrieval is not enabled on this server",
                          "rag", "retrieval_disabled")
    query = last_user_text(messages)
    threshold = (svc.settings.score_threshold if option.score_threshold is None
                 else option.score_threshold)
    with client_errors("rag"):
        hits, _ = await svc.retrieve(query, option.collection_name, option.limit, threshold)
    chunks = [{"source": h.source, "score": h.score} for h in hits]
    if not hits:
        return RagContext(messages, chunks)
    context = "\n\n".join(h.source for h in hits)
    return RagContext(add_to_system(messages, svc.settings.rag_prompt + context), chunks)
