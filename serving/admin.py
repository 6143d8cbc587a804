"""Operational endpoints: /health, /version, /tokenize, /detokenize."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt

from serving.errors import APIError, bad_request
from serving.offload import off_loop
from serving.requests import parse_request  # the same 400s as the completion endpoints
from serving.served import ServedModel
from serving.state import ServerState
from serving.version import server_version


class TokenizeRequest(BaseModel):
    # Unknown fields are refused: a parameter accepted but not honoured is a bug.
    model_config = ConfigDict(extra="forbid")

    model: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: StrictBool | None = None  # default: True for prompt, False for messages
    add_generation_prompt: StrictBool = True  # messages only


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    tokens: list[StrictInt]
    skip_special_tokens: StrictBool = False


async def health(request: web.Request, state: ServerState) -> web.Response:
    if not state.ready:
        raise APIError(503, "The server is loading its models (or shutting down)",
                       "server_error", code="not_ready", headers={"Retry-After": "5"})
    return web.json_response({"status": "ok"})


async def version(request: web.Request, state: ServerState) -> web.Response:
    return web.json_response({"version": server_version()})


def render_messages(served: ServedModel, messages: list[dict[str, Any]],
                    add_generation_prompt: bool) -> str:
    try:
        return served.engine.apply_chat_template(messages, add_generation_prompt)
    except ValueError as e:  # a malformed conversation, or the template refused it
        raise bad_request(str(e), "messages") from None


def _tokenize(state: ServerState, raw: bytes) -> str:
    body = parse_request(TokenizeRequest, raw)
    served = state.resolve(body.model)
    if (body.prompt is None) == (body.messages is None):
        raise bad_request("Give exactly one of `prompt` and `messages`", "prompt")
    if body.prompt is not None:
        text, special = body.prompt, body.add_special_tokens is not False
    else:
        text = render_messages(served, body.messages or [], body.add_generation_prompt)
        special = bool(body.add_special_tokens)  # the template already wrote BOS and friends
    tokens = served.engine.tokenizer.encode(text, add_special_tokens=special)
    return json.dumps(
        {"tokens": tokens, "count": len(tokens), "max_model_len": served.max_model_len})


async def tokenize(request: web.Request, state: ServerState) -> web.Response:
    # Parsing, rendering, tokenizing and the answer's JSON all scale with the prompt.
    text = await off_loop(_tokenize, state, await request.read())
    return web.Response(text=text, content_type="application/json")


def _detokenize(state: ServerState, raw: bytes) -> str:
    body = parse_request(DetokenizeRequest, raw)
    served = state.resolve(body.model)
    try:
        text = served.engine.tokenizer.decode(body.tokens,
                                              skip_special_tokens=body.skip_special_tokens)
    except ValueError as e:  # an id outside the vocabulary
        raise bad_request(str(e), "tokens") from None
    return json.dumps({"prompt": text})


async def detokenize(request: web.Request, state: ServerState) -> web.Response:
    text = await off_loop(_detokenize, state, await request.read())
    return web.Response(text=text, content_type="application/json")
