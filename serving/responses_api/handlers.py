"""POST /v1/responses, GET and DELETE /v1/responses/{id}.

create: validate -> the conversation (the previous response's context and output, then this
input) -> chat messages through the chat template, tools and grammar as on the chat
endpoint -> generation.start_generation -> one event generator that both kinds of answer
run: streamed, its events go out as SSE (`event: TYPE` + `data: JSON`, no [DONE], as
OpenAI sends them); otherwise its last event's response is the body. A stored response is
written before the final event goes out, so a follow-up can name it at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from aiohttp import web

from serving.chat import render_chat
from serving.errors import APIError
from serving.generation import Generation, engine_error, start_generation
from serving.offload import off_loop
from serving.request_keys import REQUEST_ID
from serving.requests import parse_request
from serving.responses import json_response
from serving.responses_api.items import normalize_input, to_messages
from serving.responses_api.objects import TERMINAL_EVENTS, Draft
from serving.responses_api.output import Event, OutputBuilder
from serving.responses_api.request import (
    EngineRequest,
    ResponsesRequest,
    engine_request,
    function_tools,
    grammar,
    text_config,
    text_grammar,
    tool_plan,
)
from serving.responses_api.store import ResponseStore, StoredResponse, new_response_id
from serving.sse import open_stream
from serving.state import ServerState
from serving.tools import ToolPlan, prepare_messages

logger = logging.getLogger(__name__)


async def create_response(request: web.Request, state: ServerState,
                          store: ResponseStore) -> web.StreamResponse:
    req = await off_loop(parse_request, ResponsesRequest, await request.read())  # big bodies
    req.check_supported()
    conversation = normalize_input(req.input)
    if req.previous_response_id is not None:
        prev = await store.get(req.previous_response_id, param="previous_response_id")
        earlier = prev.context + normalize_input(prev.response["output"],
                                                 "previous_response_id")
        conversation = earlier + conversation
    template = state.resolve(req.model).engine.tokenizer.chat_template
    tools = function_tools(req.tools)
    plan = tool_plan(req, tools, template, state.settings.max_tool_calls)
    text = text_config(req.text)
    ereq = engine_request(req, grammar(plan, text_grammar(text)), plan is not None)
    messages, template_tools = prepare_messages(
        to_messages(conversation, req.instructions), plan.tools if plan else None, template,
        plan.fmt if plan else None)
    gen = await start_generation(request, state, ereq,
                                 lambda m: [render_chat(m, messages, template_tools)], "resp")
    draft = Draft(new_response_id(), gen.meta.model, req, text, tools, gen.meta.created)
    events = run(gen, ereq, draft, plan, store, conversation)
    try:
        if req.stream:
            return await send_events(request, events)
        return json_response(await last_response(events))
    finally:
        gen.abort()  # a no-op once finished; ends the request on errors and disconnects


async def run(gen: Generation, ereq: EngineRequest, draft: Draft, plan: ToolPlan | None,
              store: ResponseStore, conversation: list[dict[str, Any]]
              ) -> AsyncGenerator[Event, None]:
    """The whole event sequence of one response, from response.created to its end."""
    yield {"type": "response.created", "response": draft.body("in_progress")}
    yield {"type": "response.in_progress", "response": draft.body("in_progress")}
    builder = OutputBuilder(plan)
    reason: str | None = None
    try:
        async with aclosing(gen.outputs) as outputs:
            async for _, out in outputs:
                gen.clock.observe(0, out)
                piece = out.outputs[0]
                reason = piece.finish_reason or reason
                for event in builder.feed(piece.text, piece.finish_reason is not None):
                    yield event
    except (ValueError, RuntimeError) as e:  # the engine failed this request
        err = engine_error(e, ereq)
        code = "server_error" if err.status >= 500 else "invalid_prompt"
        yield {"type": "response.failed", "response": draft.body(
            "failed", builder.items, gen.clock.usage(),
            {"code": code, "message": err.message, "param": err.param})}
        return
    status = {"length": "incomplete", "abort": "failed"}.get(reason or "abort", "completed")
    for event in builder.finish(status):
        yield event
    error = ({"code": "server_error", "message": "The request was aborted before it finished"}
             if status == "failed" else None)
    body = draft.body(status, builder.items, gen.clock.usage(), error)
    if draft.req.store and status != "failed":
        try:
            await store.put(StoredResponse(body, conversation))
        except OSError as e:  # the disk: the answer cannot be kept, so it is not given
            logger.exception("could not store response %s", draft.id)
            body = draft.body("failed", builder.items, gen.clock.usage(), {
                "code": "server_error", "message": f"The response could not be stored: {e}"})
            status = "failed"
    yield {"type": TERMINAL_EVENTS[status], "response": body}


async def last_response(events: AsyncGenerator[Event, None]) -> dict[str, Any]:
    """A non-streamed answer: the events run to the end, the final response returned."""
    last: Event = {}
    async with aclosing(events):
        async for event in events:
            last = event
    body = last["response"]
    if body["status"] == "failed":
        error = body["error"]
        if error["code"] == "invalid_prompt":  # the engine refused the request itself
            raise APIError(400, error["message"], param=error.get("param"))
        raise APIError(500, error["message"], "server_error")
    return body


def _sse(event: Event, number: int) -> bytes:
    payload = json.dumps({**event, "sequence_number": number}, ensure_ascii=False)
    return f"event: {event['type']}\ndata: {payload}\n\n".encode()


async def send_events(request: web.Request,
                      events: AsyncGenerator[Event, None]) -> web.StreamResponse:
    """The events as SSE, numbered from 0. A client that goes away ends the generation
    (closing `events` closes the engine stream, which aborts the request)."""
    async with aclosing(events):
        response = await open_stream(request)
        number = 0
        try:
            async for event in events:
                await response.write(_sse(event, number))
                number += 1
            await response.write_eof()
        except ConnectionResetError:
            logger.info("client of %s went away mid-stream", request.get(REQUEST_ID))
    return response


async def get_response(request: web.Request, store: ResponseStore) -> web.StreamResponse:
    if request.query.get("stream", "false").lower() == "true":
        raise APIError(400, "Replaying a stored response as a stream is not supported",
                       param="stream")
    record = await store.get(request.match_info["response_id"])
    return json_response(record.response)


async def delete_response(request: web.Request, store: ResponseStore) -> web.StreamResponse:
    response_id = request.match_info["response_id"]
    await store.delete(response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True})


def add_routes(app: web.Application, state: ServerState) -> None:
    """The three routes, over one store under the data directory (in memory without one)."""
    data_dir = state.settings.data_dir
    store = ResponseStore(data_dir / "responses" if data_dir is not None else None)

    async def create(request: web.Request) -> web.StreamResponse:
        return await create_response(request, state, store)

    async def get(request: web.Request) -> web.StreamResponse:
        return await get_response(request, store)

    async def delete(request: web.Request) -> web.StreamResponse:
        return await delete_response(request, store)

    app.router.add_post("/v1/responses", create)
    app.router.add_get("/v1/responses/{response_id}", get)
    app.router.add_delete("/v1/responses/{response_id}", delete)
