"""Which served model takes a request: its own, or its fallback when the prompt is too long
for it (the response's `model` says which), and the admission check before queueing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from serving.errors import APIError, bad_request, context_length_exceeded
from serving.requests import SamplingRequest
from serving.served import ServedModel
from serving.state import ServerState

logger = logging.getLogger(__name__)


@dataclass
class PromptInput:
    ids: list[int]
    text: str | None = None  # the prompt as text: for echo and the access log


def _fits(served: ServedModel, prompts: list[PromptInput], max_tokens: int | None) -> bool:
    need = max_tokens or 1  # None: whatever is left, but at least one token
    return all(len(p.ids) + need <= served.max_model_len for p in prompts)


def _fallback(state: ServerState, served: ServedModel) -> ServedModel | None:
    if served.fallback is None:
        return None
    try:
        return state.resolve(served.fallback)
    except APIError:  # a misconfigured rule must not read as "your model does not exist"
        logger.warning("fallback %r of %r is not served", served.fallback, served.name)
        return None


def route(
    state: ServerState, served: ServedModel, build: Callable[[ServedModel], list[PromptInput]],
    req: SamplingRequest,
) -> tuple[ServedModel, list[PromptInput]]:
    """The model that takes this request (its fallback when the prompt is too long for it)
    and the prompts as that model tokenizes them; 400 context_length_exceeded otherwise."""
    max_tokens = req.requested_max_tokens()
    prompts = build(served)
    if _fits(served, prompts, max_tokens):
        return served, prompts
    longer = _fallback(state, served)
    if longer is not None:
        longer_prompts = build(longer)
        if _fits(longer, longer_prompts, max_tokens):
            return longer, longer_prompts
    longest = max(len(p.ids) for p in prompts)
    raise context_length_exceeded(longest, max_tokens or 1, served.max_model_len,
                                  req.PROMPT_PARAM)


def budget(served: ServedModel, prompt: PromptInput, max_tokens: int | None) -> int:
    """max_tokens as asked, or (None) the rest of the context."""
    return max_tokens if max_tokens is not None else served.max_model_len - len(prompt.ids)


def check_capacity(state: ServerState, served: ServedModel, num_seqs: int, param: str) -> None:
    """Admission by waiting work: the request's `num_seqs` sequences (prompts x samples)
    join those already waiting, against --max-waiting-requests. 400 (at `param`) for a
    request that alone exceeds it, 503 with Retry-After while the queue is too full."""
    limit = state.settings.max_waiting_requests
    if num_seqs > limit:
        raise bad_request(f"The request asks for {num_seqs} sequences (prompts x n or "
                          f"best_of) but this server queues at most {limit} at a time",
                          param)
    if served.engine.stats().num_waiting + num_seqs > limit:
        raise APIError(503, "The server is overloaded: too many requests are waiting. "
                       "Retry shortly.", "server_error", code="server_overloaded",
                       headers={"Retry-After": "1"})
