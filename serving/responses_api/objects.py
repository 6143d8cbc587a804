"""The response object (`"object": "response"`) as OpenAI's API reference shapes it: what it
repeats from the request, its status, output items and usage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from serving.responses_api.request import ResponsesRequest

# status -> the event that ends a stream in it
TERMINAL_EVENTS = {"completed": "response.completed", "incomplete": "response.incomplete",
                   "failed": "response.failed"}


def usage(counts: dict[str, Any]) -> dict[str, Any]:
    """The Responses names for the chat endpoint's token counts."""
    cached = (counts.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return {"input_tokens": counts["prompt_tokens"],
            # cache_write_tokens: explicit cache writes (prompt_cache_options), never made here
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": counts["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": counts["prompt_tokens"] + counts["completion_tokens"]}


@dataclass
class Draft:
    """One response's fixed fields; `body` makes the object in a given state."""

    id: str
    model: str
    req: ResponsesRequest
    text: dict[str, Any]  # the text config as echoed
    tools: list[dict[str, Any]]  # the function tools as echoed
    created_at: int = field(default_factory=lambda: int(time.time()))

    def body(self, status: str, output: list[dict[str, Any]] | None = None,
             counts: dict[str, Any] | None = None,
             error: dict[str, Any] | None = None) -> dict[str, Any]:
        req = self.req
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "background": False,
            "error": error,
            "incomplete_details": ({"reason": "max_output_tokens"} if status == "incomplete"
                                   else None),
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "max_tool_calls": req.max_tool_calls,
            "model": self.model,
            "output": output or [],
            "parallel_tool_calls": req.parallel_tool_calls,
            "previous_response_id": req.previous_response_id,
            "prompt_cache_key": req.prompt_cache_key,
            "reasoning": {"effort": None, "summary": None},
            "safety_identifier": req.safety_identifier,
            "service_tier": "default",
            "store": req.store,
            "temperature": 1.0 if req.temperature is None else req.temperature,
            "text": self.text,
            "tool_choice": req.tool_choice or "auto",
            "tools": self.tools,
            "top_logprobs": 0,
            "top_p": 1.0 if req.top_p is None else req.top_p,
            "truncation": req.truncation,
            "usage": usage(counts) if counts is not None else None,
            "user": req.user,
            "metadata": req.metadata or {},
        }
