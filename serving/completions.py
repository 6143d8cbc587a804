"""POST /v1/completions: prompts (text or token ids) in, continuations out (or streamed)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from aiohttp import web

from engine import CompletionOutput, PositionLogprobs
from serving.errors import bad_request
from serving.generation import Finals, Generation, serve
from serving.offload import off_loop
from serving.requests import CompletionRequest, parse_request
from serving.responses import (
    Completion,
    CompletionChoice,
    CompletionChunk,
    ResponseMeta,
    Usage,
    chunk_body,
    finite,
)
from serving.routing import PromptInput
from serving.served import ServedModel
from serving.state import ServerState


def build_prompts(served: ServedModel, req: CompletionRequest) -> list[PromptInput]:
    """Tokenize text prompts (with BOS, as the model expects); token-id prompts pass as is."""
    tok = served.engine.tokenizer
    prompts = []
    for p in req.prompt_list():
        if isinstance(p, str):
            prompts.append(PromptInput(tok.encode(p), p))
            continue
        text = None
        if req.echo:  # the text is only needed to echo it back
            try:
                text = tok.decode(p)
            except ValueError as e:  # an id outside the vocabulary
                raise bad_request(str(e), "prompt") from None
        prompts.append(PromptInput(list(p), text))
    return prompts


def completion_logprobs(positions: list[PositionLogprobs],
                        offset: int) -> tuple[dict[str, Any], int]:
    """OpenAI's legacy shape, and the text offset after the last token. top_logprobs holds
    the alternatives plus the chosen token, as OpenAI does."""
    tokens, token_logprobs, top_logprobs, text_offset = [], [], [], []
    for p in positions:
        chosen = finite(p.chosen.logprob)
        top = {t.token: finite(t.logprob) for t in p.top}
        top.setdefault(p.chosen.token, chosen)
        tokens.append(p.chosen.token)
        token_logprobs.append(chosen)
        top_logprobs.append(top)
        text_offset.append(offset)
        offset += len(p.chosen.token)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs,
            "text_offset": text_offset}, offset


def _echo(gen: Generation, req: CompletionRequest, prompt_index: int) -> str:
    return (gen.prompts[prompt_index].text or "") if req.echo else ""


def completion_choice(index: int, prefix: str, out: CompletionOutput) -> CompletionChoice:
    logprobs = None
    if out.logprobs is not None:
        logprobs = completion_logprobs(out.logprobs, len(prefix))[0]
    return CompletionChoice(index=index, text=prefix + out.text, logprobs=logprobs,
                            finish_reason=out.finish_reason, stop_reason=out.stop_reason)


def completion_response(gen: Generation, req: CompletionRequest, finals: Finals
                        ) -> dict[str, Any]:
    choices = [
        completion_choice(i * req.n + o.index, _echo(gen, req, i), o)
        for i, final in sorted(finals.items()) for o in final.outputs
    ]
    body = Completion(**gen.meta.ids(), choices=choices, usage=Usage(**gen.clock.usage()))
    return body.model_dump()


def completion_chunk(meta: ResponseMeta, index: int, text: str,
                     logprobs: dict[str, Any] | None = None, finish_reason: str | None = None,
                     stop_reason: str | int | None = None) -> dict[str, Any]:
    """A text chunk: no `usage` key (OpenAI's completion schema has no null usage; the
    totals come in their own last chunk)."""
    choice = CompletionChoice(index=index, text=text, logprobs=logprobs,
                              finish_reason=finish_reason, stop_reason=stop_reason)
    return chunk_body(CompletionChunk(**meta.ids(), choices=[choice]), False)


class _ChoiceOffsets:
    """Per choice: whether it has started (the echo goes first) and where its text offset
    stands (for logprobs)."""

    def __init__(self) -> None:
        self.offsets: dict[int, int] = {}

    def chunk(self, meta: ResponseMeta, index: int, d: CompletionOutput,
              prefix: str) -> dict[str, Any]:
        first = index not in self.offsets
        start = self.offsets.get(index, len(prefix))
        logprobs = None
        if d.logprobs is not None:
            logprobs, start = completion_logprobs(d.logprobs, start)
        self.offsets[index] = start
        return completion_chunk(meta, index, (prefix if first else "") + d.text, logprobs,
                                d.finish_reason, d.stop_reason)


async def completion_chunks(gen: Generation,
                            req: CompletionRequest) -> AsyncGenerator[dict[str, Any], None]:
    """Text deltas of every choice of every prompt as they come, then (if asked) usage."""
    offsets = _ChoiceOffsets()
    async with aclosing(gen.outputs) as outputs:
        async for i, out in outputs:
            gen.clock.observe(i, out)
            for d in out.outputs:
                if d.text or d.logprobs or d.finish_reason:  # else only held-back text
                    yield offsets.chunk(gen.meta, i * req.n + d.index, d, _echo(gen, req, i))
    if req.include_usage:
        usage = Usage(**gen.clock.usage())
        yield chunk_body(CompletionChunk(**gen.meta.ids(), choices=[], usage=usage), True)


def _parse_completion(raw: bytes) -> CompletionRequest:
    req = parse_request(CompletionRequest, raw)
    req.check_supported()
    return req


async def create_completion(request: web.Request, state: ServerState) -> web.StreamResponse:
    req = await off_loop(_parse_completion, await request.read())  # large bodies, schemas
    cap = state.settings.max_prompts_per_request
    if len(req.prompt_list()) > cap:  # before any is tokenized
        raise bad_request(f"`prompt` holds {len(req.prompt_list())} prompts; this server takes "
                          f"at most {cap} in one request", "prompt")
    return await serve(request, state, req, lambda m: build_prompts(m, req), "cmpl",
                       lambda gen: completion_chunks(gen, req),
                       lambda gen, finals: completion_response(gen, req, finals))
