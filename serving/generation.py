"""The handler skeleton chat and completions share: create the engine requests, then stream
or collect their DELTA outputs, and abort whatever is left on the way out.

    serve(...) -> start_generation: resolve, route, validate, queue (every refusal a 4xx)
               -> stream: each delta becomes chunks as it comes (sse.stream_response)
                  or collect: deltas folded into one final output per prompt
               -> finally abort (a no-op once finished; ends work on errors and disconnects)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from engine import InvalidRequest, NewRequest, RequestOutput
from serving.errors import APIError, bad_request
from serving.offload import off_loop
from serving.request_keys import MODEL, PROMPT, TOKEN_TIMES, TTFT_S, USAGE
from serving.requests import SamplingRequest, to_sampling_params
from serving.responses import ResponseMeta, json_response, new_id
from serving.routing import PromptInput, budget, check_capacity, route
from serving.served import ServedModel
from serving.sse import stream_response
from serving.state import ServerState

logger = logging.getLogger(__name__)

Outputs = AsyncGenerator[tuple[int, RequestOutput], None]  # (prompt index, DELTA output)
Finals = dict[int, RequestOutput]  # prompt index -> its whole output


class TokenClock:
    """Records TTFT, per-token arrival times and usage on the request for the access log
    and the metrics; fed every DELTA output as it arrives."""

    def __init__(self, request: web.Request, prompt_tokens: int, start: float) -> None:
        self.request = request
        self.start = start
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.cached: dict[int, int] = {}
        self.times: list[float] = []
        request[TOKEN_TIMES] = self.times
        self.record_usage()

    def observe(self, prompt_index: int, delta: RequestOutput) -> None:
        self.cached[prompt_index] = delta.num_cached_tokens
        new = sum(len(o.token_ids) for o in delta.outputs)
        if new == 0:
            return
        now = time.monotonic()
        if not self.times:
            self.request[TTFT_S] = now - self.start
        self.times.extend([now] * new)
        self.completion_tokens += new
        self.record_usage()

    def record_usage(self) -> None:
        self.request[USAGE] = {"prompt_tokens": self.prompt_tokens,
                               "completion_tokens": self.completion_tokens}

    def usage(self) -> dict[str, Any]:
        completion = self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion,
                "prompt_tokens_details": {"cached_tokens": sum(self.cached.values())}}


@dataclass
class Generation:
    """The engine requests behind one HTTP request, and what its responses repeat."""

    meta: ResponseMeta
    served: ServedModel
    prompts: list[PromptInput]
    request_ids: list[str]
    outputs: Outputs
    clock: TokenClock

    def abort(self) -> None:
        """End whatever is still running (a no-op for finished requests). Also covers
        streams never iterated, whose generator cleanup would never run."""
        for rid in self.request_ids:
            self.served.engine.abort(rid)


def engine_error(exc: Exception, req: SamplingRequest) -> APIError:
    """An exception out of the engine: InvalidRequest (and other ValueErrors) are the
    client's, with the field it names; anything else is a bug."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, InvalidRequest):
        return bad_request(str(exc), req.param_for(exc.param))
    if isinstance(exc, ValueError):
        return bad_request(str(exc))
    logger.error("generation failed: %r", exc)
    return APIError(500, f"The engine failed while generating: {exc}", "server_error")


async def start_generation(
    request: web.Request, state: ServerState, req: SamplingRequest,
    build: Callable[[ServedModel], list[PromptInput]], id_prefix: str,
) -> Generation:
    """Resolve, route, validate and queue; every refusal is an APIError before anything runs."""
    start = time.monotonic()
    served = state.resolve(req.model)
    to_sampling_params(req, req.requested_max_tokens())  # bad parameters: 400 before the work
    # Rendering and tokenizing the prompts (long ones take a while) runs off the loop.
    served, prompts = await off_loop(route, state, served, build, req)
    max_tokens = req.requested_max_tokens()
    params = [to_sampling_params(req, budget(served, p, max_tokens)) for p in prompts]
    meta = ResponseMeta(new_id(id_prefix), served.name, served.fingerprint)
    rids = [meta.id if len(prompts) == 1 else f"{meta.id}-{i}" for i in range(len(prompts))]
    new = [NewRequest(rid, prompt.ids, p, prompt.text)
           for rid, prompt, p in zip(rids, prompts, params, strict=True)]
    num_seqs = sum(p.best_of or p.n for p in params)
    check_capacity(state, served, num_seqs, "n" if len(prompts) == 1 else req.PROMPT_PARAM)
    try:
        # Counted as waiting at once (no await since the check); validation (a new grammar
        # compiles there) runs off the event loop; the prompts are scheduled as one group.
        streams = await served.engine.add_requests(new)
    except ValueError as e:
        raise engine_error(e, req) from None
    texts = [p.text for p in prompts]
    request[PROMPT] = texts[0] if len(texts) == 1 else texts  # logged only when asked
    request[MODEL] = served.name  # after any fallback: labels the token metrics
    clock = TokenClock(request, sum(len(p.ids) for p in prompts), start)
    return Generation(meta, served, prompts, rids, merge(streams), clock)


async def merge(streams: list[AsyncIterator[RequestOutput]]) -> Outputs:
    """(prompt index, output) from several engine streams as they come. Closing this
    closes every stream, which aborts whatever is still running in the engine."""
    if len(streams) == 1:
        async with aclosing(streams[0]) as only:  # type: ignore[type-var]
            async for out in only:
                yield 0, out
        return
    pending: dict[asyncio.Future[RequestOutput], int] = {}
    try:
        for i, s in enumerate(streams):
            pending[asyncio.ensure_future(anext(s))] = i
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for fut in sorted(done, key=pending.__getitem__):
                i = pending.pop(fut)
                try:
                    out = fut.result()
                except StopAsyncIteration:
                    continue
                yield i, out
                pending[asyncio.ensure_future(anext(streams[i]))] = i
    finally:
        for fut in pending:
            fut.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for s in streams:
            await s.aclose()  # type: ignore[attr-defined]


async def collect(gen: Generation) -> Finals:
    """Run a non-streamed request to the end: each prompt's deltas folded into one output."""
    finals: Finals = {}
    async with aclosing(gen.outputs) as outputs:
        async for i, delta in outputs:
            gen.clock.observe(i, delta)
            if i in finals:
                finals[i].add(delta)
            else:
                finals[i] = delta
    return finals


async def serve(
    request: web.Request, state: ServerState, req: SamplingRequest,
    build: Callable[[ServedModel], list[PromptInput]], id_prefix: str,
    chunks: Callable[[Generation], AsyncGenerator[dict[str, Any], None]],
    body: Callable[[Generation, Finals], dict[str, Any]],
) -> web.StreamResponse:
    """The endpoint: `chunks` turns a generation into SSE chunks when the client streams,
    `body` turns the final outputs into the JSON answer otherwise."""
    gen = await start_generation(request, state, req, build, id_prefix)
    try:
        if req.stream:
            return await stream_response(request, chunks(gen), lambda e: engine_error(e, req))
        try:
            finals = await collect(gen)
        except (ValueError, RuntimeError) as e:
            raise engine_error(e, req) from None
        return json_response(body(gen, finals))
    finally:
        gen.abort()  # a no-op once finished; ends the requests on errors and disconnects
