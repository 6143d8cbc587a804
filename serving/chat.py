"""POST /v1/chat/completions: a conversation in, the assistant's answer out (or streamed)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from engine import CompletionOutput, PositionLogprobs, RequestOutput
from serving.errors import bad_request
from serving.generation import Generation, serve
from serving.offload import off_loop
from serving.requests import ChatCompletionRequest, parse_json_body, parse_request
from serving.responses import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ResponseMeta,
    Usage,
    chunk_body,
    finite,
)
from serving.retrieval.chat_context import with_retrieved_context
from serving.routing import PromptInput
from serving.served import ServedModel
from serving.state import ServerState
from serving.tools import (
    ToolPlan,
    ToolRequest,
    ToolStreamer,
    finish_reason,
    parse_message,
    plan_tools,
    prepare_messages,
)


def render_chat(served: ServedModel, messages: list[dict[str, Any]],
                tools: list[dict[str, Any]] | None = None) -> PromptInput:
    """The conversation through the model's chat template, tokenized."""
    try:
        text = served.engine.apply_chat_template(messages, add_generation_prompt=True,
                                                 tools=tools)
    except ValueError as e:  # malformed messages, or the template refused them
        raise bad_request(str(e), "messages") from None
    # The template already wrote BOS and the other special tokens where the model wants them.
    return PromptInput(served.engine.tokenizer.encode(text, add_special_tokens=False), text)


def _top(lp: Any) -> dict[str, Any]:
    return {"token": lp.token, "logprob": finite(lp.logprob), "bytes": list(lp.bytes)}


def chat_logprobs(positions: list[PositionLogprobs] | None) -> dict[str, Any] | None:
    """OpenAI's chat shape: {content: [{token, logprob, bytes, top_logprobs}], refusal}."""
    if positions is None:
        return None
    return {"content": [{**_top(p.chosen), "top_logprobs": [_top(t) for t in p.top]}
                        for p in positions], "refusal": None}


def chat_choice(out: CompletionOutput, plan: ToolPlan | None = None) -> ChatChoice:
    message, reason = AssistantMessage(content=out.text), out.finish_reason
    if plan is not None:
        parsed = parse_message(plan.fmt, plan.tools, out.text)
        message = AssistantMessage(content=parsed.content, tool_calls=parsed.tool_calls,
                                   function_call=parsed.function_call)
        has_calls = bool(parsed.tool_calls or parsed.function_call)
        reason = finish_reason(plan.tools, out.finish_reason, has_calls)
    return ChatChoice(
        index=out.index, message=message, logprobs=chat_logprobs(out.logprobs),
        finish_reason=reason, stop_reason=out.stop_reason,
    )


def chat_response(meta: ResponseMeta, final: RequestOutput, usage: dict[str, Any],
                  plan: ToolPlan | None = None) -> dict[str, Any]:
    body = ChatCompletion(**meta.ids(), choices=[chat_choice(o, plan) for o in final.outputs],
                          usage=Usage(**usage))
    return body.model_dump()


def chat_chunk(meta: ResponseMeta, index: int, delta: dict[str, Any], include_usage: bool,
               logprobs: dict[str, Any] | None = None, finish_reason: str | None = None,
               stop_reason: str | int | None = None) -> dict[str, Any]:
    choice = ChatChunkChoice(index=index, delta=delta, logprobs=logprobs,
                             finish_reason=finish_reason, stop_reason=stop_reason)
    return chunk_body(ChatCompletionChunk(**meta.ids(), choices=[choice]), include_usage)


def delta_chunk(meta: ResponseMeta, d: CompletionOutput, include_usage: bool) -> dict[str, Any]:
    return chat_chunk(meta, d.index, {"content": d.text} if d.text else {}, include_usage,
                      chat_logprobs(d.logprobs), d.finish_reason, d.stop_reason)


def tool_chunks(meta: ResponseMeta, d: CompletionOutput, streamer: ToolStreamer,
                include_usage: bool) -> list[dict[str, Any]]:
    """A decided piece of text as content / tool-call chunks (never both in one chunk);
    the last one of the choice carries the finish_reason."""
    final = d.finish_reason is not None
    deltas = streamer.feed(d.text, final)
    logprobs = chat_logprobs(d.logprobs) if d.logprobs else None
    if final or (logprobs and not deltas):
        deltas.append({})  # the finish chunk (or a carrier for this step's logprobs)
    chunks = []
    for i, delta in enumerate(deltas):
        last = final and i == len(deltas) - 1
        reason = finish_reason(streamer.tools, d.finish_reason, streamer.has_calls)
        chunks.append(chat_chunk(meta, d.index, delta, include_usage,
                                 logprobs if i == 0 else None, reason if last else None,
                                 d.stop_reason if last else None))
    return chunks


def with_chunks(body: dict[str, Any], chunks: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The retrieved chunks as an extra top-level field (OpenAI clients ignore it), only
    when the request used retrieval."""
    return body if chunks is None else {**body, "retrieved_chunks": chunks}


async def chat_chunks(gen: Generation, req: ChatCompletionRequest, plan: ToolPlan | None = None,
                      rag_chunks: list[dict[str, Any]] | None = None,
                      ) -> AsyncGenerator[dict[str, Any], None]:
    """Role chunks (the first one carries `retrieved_chunks` when retrieval was on), then
    content (or tool-call) deltas per choice as the engine releases them, then (if asked)
    the usage chunk."""
    streamers = ({i: ToolStreamer(plan.fmt, plan.tools) for i in range(req.n)}
                 if plan is not None else {})
    started = False
    async with aclosing(gen.outputs) as outputs:
        async for _, out in outputs:
            gen.clock.observe(0, out)
            if not started:  # only once the engine has accepted the request
                started = True
                for i in range(req.n):
                    role = chat_chunk(gen.meta, i, {"role": "assistant", "content": ""},
                                      req.include_usage)
                    yield with_chunks(role, rag_chunks) if i == 0 else role
            for d in out.outputs:
                if not (d.text or d.logprobs or d.finish_reason):
                    continue  # only held-back text so far
                if plan is None:
                    yield delta_chunk(gen.meta, d, req.include_usage)
                    continue
                for chunk in tool_chunks(gen.meta, d, streamers[d.index], req.include_usage):
                    yield chunk
    if req.include_usage:
        usage = Usage(**gen.clock.usage())
        yield chunk_body(ChatCompletionChunk(**gen.meta.ids(), choices=[], usage=usage), True)


@dataclass
class _ChatRequest:
    body: dict[str, Any]  # the parsed JSON (the RAG option is read from it)
    req: ChatCompletionRequest
    tools: ToolRequest | None
    template: str | None
    plan: ToolPlan | None


def _parse_chat(state: ServerState, raw: bytes) -> _ChatRequest:
    """Parse and check the body, tools and schemas: off the event loop (a large body or
    schema takes a while)."""
    body = parse_json_body(raw)
    req = parse_request(ChatCompletionRequest, body)
    tools = req.check_supported()
    # The call format and the prompt follow the requested model's chat template.
    template = state.resolve(req.model).engine.tokenizer.chat_template
    plan = plan_tools(tools, template, state.settings.max_tool_calls)
    if plan is not None:  # the tools' grammar, with the response_format's for a text answer
        req.set_guided(plan.guided(req.guided))
    return _ChatRequest(body, req, tools, template, plan)


async def create_chat_completion(request: web.Request,
                                 state: ServerState) -> web.StreamResponse:
    chat = await off_loop(_parse_chat, state, await request.read())
    req, plan = chat.req, chat.plan
    rag = await with_retrieved_context(state, chat.body, req.template_messages())
    messages, template_tools = await off_loop(
        prepare_messages, rag.messages, chat.tools, chat.template, plan.fmt if plan else None)
    return await serve(request, state, req,
                       lambda m: [render_chat(m, messages, template_tools)], "chatcmpl",
                       lambda gen: chat_chunks(gen, req, plan, rag.chunks),
                       lambda gen, finals: with_chunks(
                           chat_response(gen.meta, finals[0], gen.clock.usage(), plan),
                           rag.chunks))
