"""The body of POST /v1/responses: validated, and turned into what the chat machinery takes
(chat-style tools for serving.tools, a grammar for text.format, an engine request).

Types are strict and unknown fields are ignored, as on the chat endpoint. Parameters this
server cannot honour (built-in tools, images, background mode, reasoning effort...) are
400s naming the parameter, never silently dropped.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from engine import GuidedDecoding
from serving.errors import APIError, bad_request
from serving.requests import ResponseFormat, SamplingRequest
from serving.tools import ToolPlan, plan_tools, tool_request
from serving.tools.definitions import ToolRequest

MAX_METADATA_PAIRS = 16  # OpenAI's limits on `metadata`
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
# `include` values that name parts of items this server never outputs (reasoning, searches,
# images): asking for them is honoured by there being nothing to include.
NOTHING_TO_INCLUDE = frozenset({
    "reasoning.encrypted_content", "web_search_call.results", "web_search_call.action.sources",
    "file_search_call.results", "code_interpreter_call.outputs",
    "computer_call_output.output.image_url", "message.input_image.image_url"})


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str
    input: str | list[Any]
    instructions: str | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    text: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    max_output_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    truncation: Literal["disabled", "auto"] = "disabled"
    user: str | None = None
    # Accepted; nothing to honour here (they tune OpenAI's own infrastructure).
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    max_tool_calls: int | None = Field(None, ge=1)  # counts built-in tool calls: there are none
    # Parameters checked in check_supported (given, they would not be honoured).
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    background: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    conversation: Any = None
    prompt: Any = None

    def check_supported(self) -> None:
        if self.truncation == "auto":
            raise bad_request("truncation 'auto' is not supported: an input longer than the "
                              "model's context is a 400 (truncation 'disabled')", "truncation")
        if self.background:
            raise bad_request("background mode is not supported", "background")
        if self.conversation is not None:
            raise bad_request("conversations are not supported; use previous_response_id",
                              "conversation")
        if self.prompt is not None:
            raise bad_request("prompt templates are not supported", "prompt")
        for value in self.include or []:
            if value not in NOTHING_TO_INCLUDE:
                raise bad_request(f"include value {value!r} is not supported", "include")
        if self.top_logprobs:
            raise bad_request("top_logprobs is not supported on /v1/responses",
                              "top_logprobs")
        if self.reasoning and any(v is not None for v in self.reasoning.values()):
            raise bad_request("reasoning options are not supported with this model",
                              "reasoning")
        self._check_metadata()

    def _check_metadata(self) -> None:
        meta = self.metadata or {}
        if len(meta) > MAX_METADATA_PAIRS:
            raise bad_request(f"metadata holds at most {MAX_METADATA_PAIRS} pairs", "metadata")
        for key, value in meta.items():
            if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
                raise bad_request(f"metadata keys are at most {MAX_METADATA_KEY} characters "
                                  f"and values at most {MAX_METADATA_VALUE}", "metadata")


# ---- tools -------------------------------------------------------------------------------


def function_tools(raw: list[Any] | None) -> list[dict[str, Any]]:
    """The function tools in the Responses shape ({type, name, description, parameters,
    strict}); 400 for other kinds of tool."""
    out = []
    for i, tool in enumerate(raw or []):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise bad_request(f"Tools of type {kind!r} are not supported: only 'function' "
                              "tools are", f"tools[{i}].type")
        out.append({"type": "function", "name": tool.get("name"),
                    "description": tool.get("description"),
                    "parameters": tool.get("parameters"),
                    # The grammar holds every call to its schema: strict, unless told otherwise.
                    "strict": tool.get("strict") is not False})
    return out


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn = {k: tool[k] for k in ("name", "description", "parameters") if tool[k] is not None}
    if "name" not in fn:
        fn["name"] = None  # so that the name check reports it
    return {"type": "function", "function": fn}


def _chat_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise bad_request("`tool_choice` must be 'none', 'auto', 'required' or "
                      "{\"type\": \"function\", \"name\": ...}", "tool_choice")


def tool_plan(req: ResponsesRequest, tools: list[dict[str, Any]], template: str | None,
              max_calls: int) -> ToolPlan | None:
    """The chat machinery's plan for these tools (None: the model answers in text)."""
    choice = req.tool_choice
    if not tools:
        if choice in (None, "none", "auto"):
            return None
        raise bad_request("`tool_choice` needs `tools` to choose from", "tool_choice")
    try:
        request: ToolRequest | None = tool_request(
            [_chat_tool(t) for t in tools], _chat_choice(choice), None, None,
            req.parallel_tool_calls)
    except APIError as e:  # chat's field names -> this API's (tools[0].function.x -> .x)
        if e.param:
            e.param = e.param.replace(".function", "", 1)
        raise
    return plan_tools(request, template, max_calls)


# ---- text.format -------------------------------------------------------------------------


def text_config(raw: dict[str, Any] | None) -> dict[str, Any]:
    """`text` as the response echoes it: {"format": {...}}; 400 for a malformed format."""
    raw = raw or {}
    if raw.get("verbosity") not in (None, "medium"):
        raise bad_request("text.verbosity is not supported with this model", "text.verbosity")
    fmt = raw.get("format") or {"type": "text"}
    if not isinstance(fmt, dict):
        raise bad_request("text.format must be an object", "text.format")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return {"format": {"type": kind}}
    if kind != "json_schema":
        raise bad_request("text.format.type must be 'text', 'json_object' or 'json_schema'",
                          "text.format.type")
    if not isinstance(fmt.get("name"), str):
        raise bad_request("text.format json_schema needs a `name`", "text.format.name")
    if not isinstance(fmt.get("schema"), dict):
        raise bad_request("text.format json_schema needs a `schema` object",
                          "text.format.schema")
    return {"format": {"type": "json_schema", "name": fmt["name"], "schema": fmt["schema"],
                       "description": fmt.get("description"), "strict": fmt.get("strict")}}


def text_grammar(text: dict[str, Any]) -> GuidedDecoding | None:
    """The grammar that enforces text.format (chat's response_format machinery)."""
    fmt = text["format"]
    if fmt["type"] == "text":
        return None
    spec = {"name": fmt["name"], "schema": fmt["schema"]} if fmt["type"] == "json_schema" \
        else None
    try:
        return ResponseFormat(type=fmt["type"], json_schema=spec).guided()
    except APIError as e:
        e.param = "text.format.schema"
        raise


def grammar(plan: ToolPlan | None, text_guided: GuidedDecoding | None) -> GuidedDecoding | None:
    """One grammar for the request: the tool calls' (under `auto`, or an answer in
    text.format, as on /v1/chat/completions), or text.format's alone."""
    if plan is not None:
        return plan.guided(text_guided)
    return text_guided


# ---- the engine's view -------------------------------------------------------------------


class EngineRequest(SamplingRequest):
    """What generation.start_generation takes, with this API's parameter names in errors."""

    PROMPT_PARAM: ClassVar[str] = "input"
    _guided_param: str = PrivateAttr(default="text.format")

    def max_tokens_param(self) -> str:
        return "max_output_tokens"

    def param_for(self, engine_param: str | None) -> str | None:
        if engine_param == "guided":
            return self._guided_param
        return super().param_for(engine_param)


def engine_request(req: ResponsesRequest, guided: GuidedDecoding | None,
                   has_tools: bool) -> EngineRequest:
    out = EngineRequest(model=req.model, temperature=req.temperature, top_p=req.top_p,
                        max_tokens=req.max_output_tokens, stream=req.stream)
    out.set_guided(guided)
    out._guided_param = "tools" if has_tools else "text.format"
    return out
