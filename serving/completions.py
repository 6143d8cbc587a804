"""POST /v1/completions: prompts (text or token ids) in, continuations out (or streamed)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from aiohttp import web

from engine import CompletionOutput, PositionLogprobs, RequestOutput
from engine.tokenizer import Tokenizer
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


def prompt_logprobs_part(tokenizer: Tokenizer, prompt_ids: list[int],
                         positions: list[PositionLogprobs | None]) -> dict[str, Any]:
    """The echoed prompt's tokens in the completions logprobs shape: the first token has
    no context, so its logprob and top_logprobs are null (as OpenAI's legacy API)."""
    first = tokenizer.decode(prompt_ids[:1])
    rest = [p for p in positions[1:] if p is not None]
    part, _ = completion_logprobs(rest, len(first))
    return {"tokens": [first, *part["tokens"]],
            "token_logprobs": [None, *part["token_logprobs"]],
            "top_logprobs": [None, *part["top_logprobs"]],
            "text_offset": [0, *part["text_offset"]]}


def join_logprobs(first: dict[str, Any] | None,
                  second: dict[str, Any] | None) -> dict[str, Any] | None:
    if first is None or second is None:
        return first or second
    return {key: first[key] + second[key] for key in first}


def _echo(gen: Generation, req: CompletionRequest, prompt_index: int) -> str:
    return (gen.prompts[prompt_index].text or "") if req.echo else ""


def _prompt_part(gen: Generation, req: CompletionRequest, out: RequestOutput
                 ) -> dict[str, Any] | None:
    """The prompt's logprobs when echo and logprobs are both asked for (else None)."""
    if not req.echo or req.logprobs is None or out.prompt_logprobs is None:
        return None
    return prompt_logprobs_part(gen.served.engine.tokenizer, out.prompt_token_ids,
                                out.prompt_logprobs)


def _hide_generated(out: CompletionOutput) -> CompletionOutput:
    """echo with max_tokens 0: the one token the engine sampled is no part of the answer."""
    return replace(out, text="", token_ids=[], finish_reason="length", stop_reason=None,
                   logprobs=[] if out.logprobs is not None else None)


def completion_choice(index: int, prefix: str, out: CompletionOutput,
                      prompt_part: dict[str, Any] | None = None) -> CompletionChoice:
    logprobs = None
    if out.logprobs is not None:
        logprobs = completion_logprobs(out.logprobs, len(prefix))[0]
    return CompletionChoice(index=index, text=prefix + out.text,
                            logprobs=join_logprobs(prompt_part, logprobs),
                            finish_reason=out.finish_reason, stop_reason=out.stop_reason)


def _usage(gen: Generation, req: CompletionRequest) -> Usage:
    usage = gen.clock.usage()
    if req.echo_only:  # the hidden token is no completion token
        usage.update(completion_tokens=0, total_tokens=usage["prompt_tokens"])
    return Usage(**usage)


def completion_response(gen: Generation, req: CompletionRequest, finals: Finals
                        ) -> dict[str, Any]:
    choices = []
    for i, final in sorted(finals.items()):
        prompt_part = _prompt_part(gen, req, final)
        for o in final.outputs:
            o = _hide_generated(o) if req.echo_only else o
            choices.append(completion_choice(i * req.n + o.index, _echo(gen, req, i), o,
                                             prompt_part))
    body = Completion(**gen.meta.ids(), choices=choices, usage=_usage(gen, req))
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
    """Per choice: whether it has started (the echo, and the prompt's logprobs, go first)
    and where its text offset stands (for logprobs)."""

    def __init__(self) -> None:
        self.offsets: dict[int, int] = {}

    def chunk(self, meta: ResponseMeta, index: int, d: CompletionOutput,
              prefix: str, prompt_part: dict[str, Any] | None = None) -> dict[str, Any]:
        first = index not in self.offsets
        start = self.offsets.get(index, len(prefix))
        logprobs = None
        if d.logprobs is not None:
            logprobs, start = completion_logprobs(d.logprobs, start)
        if first:
            logprobs = join_logprobs(prompt_part, logprobs)
        self.offsets[index] = start
        return completion_chunk(meta, index, (prefix if first else "") + d.text, logprobs,
                                d.finish_reason, d.stop_reason)


async def completion_chunks(gen: Generation,
                            req: CompletionRequest) -> AsyncGenerator[dict[str, Any], None]:
    """Text deltas of every choice of every prompt as they come, then (if asked) usage.
    The prompt's logprobs (echo with logprobs) arrive with the first output after its
    prefill, before any choice of that prompt has started."""
    offsets = _ChoiceOffsets()
    prompt_parts: dict[int, dict[str, Any] | None] = {}
    async with aclosing(gen.outputs) as outputs:
        async for i, out in outputs:
            gen.clock.observe(i, out)
            if out.prompt_logprobs is not None:
                prompt_parts[i] = _prompt_part(gen, req, out)
            for d in out.outputs:
                if req.echo_only:
                    if d.finish_reason is None:
                        continue  # the prompt alone, in one chunk, once the request ends
                    d = _hide_generated(d)
                if d.text or d.logprobs or d.finish_reason:  # else only held-back text
                    yield offsets.chunk(gen.meta, i * req.n + d.index, d, _echo(gen, req, i),
                                        prompt_parts.get(i))
    if req.include_usage:
        yield chunk_body(CompletionChunk(**gen.meta.ids(), choices=[], usage=_usage(gen, req)),
                         True)


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
