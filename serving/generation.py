"""What chat and completions share: routing by context length, admission, the engine
streams, deltas, timings and the SSE response."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine import CompletionOutput, PositionLogprobs, RequestOutput
from serving.errors import APIError, bad_request, context_length_exceeded
from serving.request_keys import MODEL, PROMPT, REQUEST_ID, TOKEN_TIMES, TTFT_S, USAGE
from serving.requests import SamplingRequest, to_sampling_params, value_error_param
from serving.served import ServedModel
from serving.sse import DONE, event, open_stream
from serving.state import ServerState

logger = logging.getLogger(__name__)

MIN_LOGPROB = -9999.0  # JSON has no -Infinity; a masked token gets this instead


@dataclass
class PromptInput:
    ids: list[int]
    text: str | None = None  # the prompt as text: for echo and the access log


@dataclass
class ResponseMeta:
    """What every chunk of one response repeats."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))

    def ids(self) -> dict[str, Any]:
        """What every response body and chunk of this request repeats."""
        return {"id": self.id, "created": self.created, "model": self.model}


def json_response(body: dict[str, Any]) -> web.Response:
    return web.json_response(body, dumps=lambda b: json.dumps(b, ensure_ascii=False))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else MIN_LOGPROB


# ---- routing and admission -----------------------------------------------------------------

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
    err = context_length_exceeded(longest, max_tokens or 1, served.max_model_len)
    err.param = req.PROMPT_PARAM
    raise err


def budget(served: ServedModel, prompt: PromptInput, max_tokens: int | None) -> int:
    """max_tokens as asked, or (None) the rest of the context."""
    return max_tokens if max_tokens is not None else served.max_model_len - len(prompt.ids)


def check_capacity(state: ServerState, served: ServedModel) -> None:
    if served.engine.num_waiting >= state.settings.max_waiting_requests:
        raise APIError(503, "The server is overloaded: too many requests are waiting. "
                       "Retry shortly.", "server_error", code="server_overloaded",
                       headers={"Retry-After": "1"})


@dataclass
class Generation:
    """The engine requests behind one HTTP request, and what its responses repeat."""

    meta: ResponseMeta
    served: ServedModel
    prompts: list[PromptInput]
    request_ids: list[str]
    outputs: AsyncGenerator[tuple[int, RequestOutput], None]
    clock: TokenClock

    def abort(self) -> None:
        """End whatever is still running (a no-op for finished requests). Also covers
        streams never iterated, whose generator cleanup would never run."""
        for rid in self.request_ids:
            self.served.engine.abort(rid)


async def start_generation(
    request: web.Request, state: ServerState, req: SamplingRequest,
    build: Callable[[ServedModel], list[PromptInput]], id_prefix: str,
) -> Generation:
    """Resolve, route, check and queue; every refusal is an APIError before anything runs."""
    start = time.monotonic()
    served = state.resolve(req.model)
    to_sampling_params(req, req.requested_max_tokens())  # bad parameters: 400 before the work
    served, prompts = route(state, served, build, req)
    max_tokens = req.requested_max_tokens()
    params = [to_sampling_params(req, budget(served, p, max_tokens)) for p in prompts]
    check_capacity(state, served)
    try:  # a new grammar compiles off the event loop (~0.3 s), so other streams keep flowing
        await served.engine.compile_guided(params[0])
    except ValueError as e:
        raise engine_error(e, req) from None
    meta = ResponseMeta(new_id(id_prefix), served.name)
    rids = [meta.id if len(prompts) == 1 else f"{meta.id}-{i}" for i in range(len(prompts))]
    streams: list[AsyncGenerator[RequestOutput, None]] = []
    try:
        for rid, prompt, p in zip(rids, prompts, params, strict=True):
            streams.append(served.engine.add_request(rid, prompt.ids, p, prompt.text))
    except ValueError as e:
        for rid in rids[: len(streams)]:  # queued, never iterated: abort them by id
            served.engine.abort(rid)
        raise engine_error(e, req) from None
    texts = [p.text for p in prompts]
    request[PROMPT] = texts[0] if len(texts) == 1 else texts  # logged only when asked
    request[MODEL] = served.name  # after any fallback: labels the token metrics
    clock = TokenClock(request, sum(len(p.ids) for p in prompts), start)
    return Generation(meta, served, prompts, rids, merge(streams), clock)


def engine_error(exc: Exception, req: SamplingRequest) -> APIError:
    """An exception out of the engine: its ValueErrors are the client's, the rest are bugs."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ValueError):
        return bad_request(str(exc), value_error_param(str(exc), req))
    logger.error("generation failed: %r", exc)
    return APIError(500, f"The engine failed while generating: {exc}", "server_error")


# ---- engine streams ------------------------------------------------------------------------

async def merge(
    streams: list[AsyncGenerator[RequestOutput, None]],
) -> AsyncGenerator[tuple[int, RequestOutput], None]:
    """(prompt index, output) from several engine streams as they come. Closing this
    closes every stream, which aborts whatever is still running in the engine."""
    if len(streams) == 1:
        async with aclosing(streams[0]) as only:
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
            await s.aclose()


@dataclass
class ChoiceDelta:
    index: int
    text: str
    logprobs: list[PositionLogprobs] | None
    finish_reason: str | None
    stop_reason: str | int | None
    first: bool  # the first delta of this choice


def undecided_length(text: str, stops: list[str]) -> int:
    """How many trailing characters may still change: an incomplete UTF-8 sequence (shown
    as U+FFFD), or the start of a stop string. The engine's cumulative text includes them."""
    rest = text.rstrip("\ufffd")
    held = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(rest)), held, -1):
            if rest.endswith(s[:k]):
                held = k
                break
    return len(text) - len(rest) + held


class DeltaTracker:
    """Turns the engine's cumulative outputs into what is new and decided since the last
    chunk, so a stop string (or a half character) is never sent and then taken back."""

    def __init__(self, stop: str | list[str] | None = None) -> None:
        self._stops = [stop] if isinstance(stop, str) else list(stop or [])
        self._text: dict[int, int] = {}
        self._logprobs: dict[int, int] = {}
        self._done: set[int] = set()

    def step(self, index: int, out: CompletionOutput) -> ChoiceDelta | None:
        if index in self._done:
            return None
        first = index not in self._text
        sent = self._text.get(index, 0)
        end = len(out.text)
        if out.finish_reason is None:
            end -= undecided_length(out.text, self._stops)
            if end <= sent:
                return None  # nothing decided yet
        self._text[index] = max(end, sent)
        logprobs = None
        if out.logprobs is not None:
            logprobs = out.logprobs[self._logprobs.get(index, 0):]
            self._logprobs[index] = len(out.logprobs)
        if out.finish_reason is not None:
            self._done.add(index)
        return ChoiceDelta(index, out.text[sent:end], logprobs, out.finish_reason,
                           out.stop_reason, first)


class TokenClock:
    """Records TTFT, per-token arrival times and usage on the request for the access log."""

    def __init__(self, request: web.Request, prompt_tokens: int, start: float) -> None:
        self.request = request
        self.start = start
        self.prompt_tokens = prompt_tokens
        self.latest: dict[int, RequestOutput] = {}
        self.times: list[float] = []
        request[TOKEN_TIMES] = self.times
        self.record_usage()

    @property
    def completion_tokens(self) -> int:
        return sum(len(o.token_ids) for r in self.latest.values() for o in r.outputs)

    def observe(self, prompt_index: int, out: RequestOutput) -> None:
        before = self.completion_tokens
        self.latest[prompt_index] = out
        now = time.monotonic()
        new = self.completion_tokens - before
        if new > 0 and not self.times:
            self.request[TTFT_S] = now - self.start
        self.times.extend([now] * new)
        self.record_usage()

    def record_usage(self) -> None:
        self.request[USAGE] = {"prompt_tokens": self.prompt_tokens,
                                 "completion_tokens": self.completion_tokens}

    def usage(self) -> dict[str, Any]:
        completion = self.completion_tokens
        cached = sum(r.num_cached_tokens for r in self.latest.values())
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion,
                "prompt_tokens_details": {"cached_tokens": cached}}


async def collect(outputs: AsyncGenerator[tuple[int, RequestOutput], None], clock: TokenClock,
                  req: SamplingRequest) -> dict[int, RequestOutput]:
    """Run a non-streamed request to the end; the last output of each prompt."""
    try:
        async with aclosing(outputs):
            async for i, out in outputs:
                clock.observe(i, out)
    except (ValueError, RuntimeError) as e:
        raise engine_error(e, req) from None
    return clock.latest


# ---- SSE -----------------------------------------------------------------------------------

async def stream_response(request: web.Request,
                          chunks: AsyncGenerator[dict[str, Any], None],
                          req: SamplingRequest) -> web.StreamResponse:
    """Send `chunks` as SSE. The first chunk is awaited before the 200 goes out, so errors
    at admission are still plain 4xx answers; later ones travel as an error event."""
    async with aclosing(chunks):
        try:
            first = await anext(chunks)
        except (ValueError, RuntimeError) as e:
            raise engine_error(e, req) from None
        response = await open_stream(request)
        try:
            await response.write(event(first))
            async for chunk in chunks:
                await response.write(event(chunk))
            error = None
        except ConnectionResetError:  # the client went away: closing `chunks` aborts
            return response
        except Exception as e:  # a response has begun: report in-band, keep serving
            if not isinstance(e, (APIError, ValueError)):
                logger.exception("stream %s failed", request.get(REQUEST_ID))
            error = engine_error(e, req)
    try:
        if error is not None:
            await response.write(event(error.body()))
        await response.write(DONE)
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response
