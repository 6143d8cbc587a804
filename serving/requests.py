"""Request bodies of /v1/chat/completions and /v1/completions, and their mapping to the engine.

Types are strict (a string is never a number, 1 is never True) because OpenAI rejects them
too; unknown fields are ignored since OpenAI clients send extras. Every validation problem
becomes a 400 `invalid_request_error` whose `param` names the field.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from engine import GuidedDecoding, InvalidRequest, SamplingParams
from serving.errors import APIError, bad_request
from serving.json_body import parse_json_body
from serving.schemas import check_json_schema
from serving.tools.definitions import ToolRequest, tool_request

MAX_N = 128
MAX_TOP_LOGPROBS = 20  # the engine's SamplingParams limit

M = TypeVar("M", bound=BaseModel)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    def guided(self) -> GuidedDecoding | None:
        """The grammar that enforces this format (None for text); 400 if malformed."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return GuidedDecoding(json_object=True)
        spec = self.json_schema
        where = "response_format.json_schema"
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise bad_request("response_format json_schema needs `json_schema` with a `name`",
                              where)
        schema = spec.get("schema", {"type": "object"})
        if not isinstance(schema, dict):
            raise bad_request("`json_schema.schema` must be a JSON schema object", where)
        check_json_schema(schema, where, "JSON schema")
        return GuidedDecoding(json_schema=schema)


class FunctionCall(_Strict):
    """A call in a conversation's history; `arguments` is OpenAI's JSON string (an object
    is taken too: the prompt writes it as JSON either way)."""

    name: str
    arguments: str | dict[str, Any]


class ToolCall(_Strict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(_Strict):
    # extra="allow": other fields are passed on to the chat template.
    model_config = ConfigDict(strict=True, extra="allow")

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None


class SamplingRequest(_Strict):
    """The parameters both endpoints share."""

    PROMPT_PARAM: ClassVar[str] = "prompt"  # where engine errors about the prompt point

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    user: str | None = None  # accepted for compatibility; it only labels the end user
    # Extras of the open servers (vLLM's names).
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    response_format: ResponseFormat | None = None
    # The grammar the handler chose (response_format or tool calls), passed to the engine.
    _guided: GuidedDecoding | None = PrivateAttr(default=None)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def check_supported(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options is only allowed when stream is true",
                              "stream_options")
        self.set_guided(self.response_format.guided() if self.response_format else None)

    def set_guided(self, guided: GuidedDecoding | None) -> None:
        self._guided = guided

    @property
    def guided(self) -> GuidedDecoding | None:
        """The grammar chosen so far (after check_supported: the response_format's)."""
        return self._guided

    def param_for(self, engine_param: str | None) -> str | None:
        """The request field an engine InvalidRequest.param stands for (OpenAI's `param`)."""
        if engine_param == "prompt":
            return self.PROMPT_PARAM
        if engine_param == "guided":
            return "response_format"
        if engine_param == "max_tokens":
            return self.max_tokens_param()
        return engine_param if engine_param in type(self).model_fields else None

    def max_tokens_param(self) -> str:
        return "max_tokens"

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def num_logprobs(self) -> int | None:
        """Top alternatives per token for the engine; None when logprobs are off."""
        return None

    def sampling_kwargs(self) -> dict[str, Any]:
        given = {
            "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
            "min_p": self.min_p, "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "repetition_penalty": self.repetition_penalty,
        }
        # None means "not given": keep SamplingParams' own default.
        kwargs = {k: v for k, v in given.items() if v is not None}
        if self.top_p == 0.0:  # OpenAI allows 0: only the most likely token survives
            kwargs.update(top_p=1.0, top_k=1)
        kwargs.update(
            n=self.n, stop=self.stop, stop_token_ids=self.stop_token_ids, seed=self.seed,
            logit_bias=self.logit_bias, min_tokens=self.min_tokens, ignore_eos=self.ignore_eos,
            skip_special_tokens=self.skip_special_tokens, logprobs=self.num_logprobs(),
            include_stop_str_in_output=self.include_stop_str_in_output, guided=self._guided,
        )
        return kwargs


class ChatCompletionRequest(SamplingRequest):
    PROMPT_PARAM: ClassVar[str] = "messages"

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    def requested_max_tokens(self) -> int | None:
        # max_completion_tokens replaces the deprecated max_tokens in OpenAI's API.
        return self.max_completion_tokens or self.max_tokens

    def max_tokens_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"

    def param_for(self, engine_param: str | None) -> str | None:
        if engine_param == "guided" and (self.tools or self.functions):
            return "tools" if self.tools else "functions"  # the grammar came from the tools
        return super().param_for(engine_param)

    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def check_supported(self) -> ToolRequest | None:
        """Validate what pydantic cannot; returns the tools the model may call (None: text
        only) and sets the grammar of a JSON response_format."""
        super().check_supported()
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs set to true", "top_logprobs")
        self._check_content()
        # With tools, a JSON response_format constrains the text answer (serving/chat.py).
        return tool_request(self.tools, self.tool_choice, self.functions, self.function_call,
                            self.parallel_tool_calls)

    def _check_content(self) -> None:
        for i, message in enumerate(self.messages):
            if not isinstance(message.content, list):
                continue
            for j, part in enumerate(message.content):
                kind = part.get("type")
                where = f"messages[{i}].content[{j}]"
                if kind != "text":
                    raise bad_request(f"Content parts of type {kind!r} are not supported: this "
                                      "server takes text only", where)
                if not isinstance(part.get("text"), str):
                    raise bad_request("A text part needs a string `text`", where)

    def template_messages(self) -> list[dict[str, Any]]:
        """The conversation as the chat template wants it: only the fields the client set."""
        out = []
        for m in self.messages:
            d = m.model_dump(exclude_unset=True)
            d.setdefault("content", None)
            out.append(d)
        return out


Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplingRequest):
    prompt: Prompt
    # OpenAI's default for completions (chat: none). 0 with echo: the prompt only (its
    # logprobs, for evaluation harnesses); the engine then samples one token, never shown.
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=MAX_N)

    @property
    def echo_only(self) -> bool:
        """echo with max_tokens 0: the answer is the prompt, nothing generated."""
        return self.echo and self.max_tokens == 0

    def requested_max_tokens(self) -> int | None:
        return 1 if self.echo_only else self.max_tokens

    def num_logprobs(self) -> int | None:
        return self.logprobs

    def sampling_kwargs(self) -> dict[str, Any]:
        # echo with logprobs: the prompt tokens' logprobs too (the same number of top ones).
        prompt_logprobs = self.logprobs if self.echo else None
        return {**super().sampling_kwargs(), "best_of": self.best_of,
                "prompt_logprobs": prompt_logprobs}

    def check_supported(self) -> None:
        super().check_supported()
        if self.suffix:
            raise bad_request("suffix (text insertion) is not supported by this model",
                              "suffix")
        if self.best_of is not None and self.best_of < self.n:
            raise bad_request(f"best_of ({self.best_of}) must be >= n ({self.n})", "best_of")
        if self.stream and self.best_of is not None and self.best_of > self.n:
            raise bad_request("best_of cannot be used with stream", "best_of")
        if self.max_tokens == 0 and not self.echo:
            raise bad_request("max_tokens must be >= 1 (0 is only allowed with echo, which "
                              "then returns the prompt alone)", "max_tokens")
        if self.echo_only and self.min_tokens > 0:
            raise bad_request("min_tokens must be 0 when max_tokens is 0", "min_tokens")
        if isinstance(self.prompt, list) and not self.prompt:
            raise bad_request("prompt must not be empty", "prompt")

    def prompt_list(self) -> list[str | list[int]]:
        """One entry per prompt: a string, or a list of token ids."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]  # type: ignore[list-item]
        return list(p)  # type: ignore[arg-type]


# ---- parsing -------------------------------------------------------------------------------

def _is_union_tag(item: str) -> bool:
    """Pydantic puts the union member it tried into `loc` ('str', 'list[int]', ...)."""
    return item in {"str", "int", "float", "bool", "list", "dict", "none"} or any(
        c in item for c in "[](),- ") or item[:1].isupper()


@functools.cache
def _known_fields() -> frozenset[str]:
    models = (ChatCompletionRequest, CompletionRequest, ChatMessage, StreamOptions,
              ResponseFormat, ToolCall, FunctionCall)
    return frozenset(name for m in models for name in m.model_fields)


def _param_path(loc: tuple[int | str, ...]) -> str:
    """`messages[0].role` from pydantic's loc: it ends at the deepest named field (not at
    a union tag, a user's dict key or a list index)."""
    fields = _known_fields()
    path, named = "", ""
    for item in loc:
        if isinstance(item, int):
            path += f"[{item}]"
        elif path and item not in fields:
            break
        else:
            path += f".{item}" if path else item
            named = path
    return named


def _union_split(loc: tuple[int | str, ...]) -> int | None:
    """Where the first union-member tag sits in `loc`, if any."""
    for i, item in enumerate(loc):
        if isinstance(item, str) and i > 0 and _is_union_tag(item):
            return i
    return None


def validation_error(exc: ValidationError) -> APIError:
    """The first problem, as a 400 whose param names the field (messages[0].role...)."""
    errors = exc.errors()
    first = errors[0]
    param = _param_path(first["loc"])
    if first["type"] == "missing":
        return bad_request(f"Missing required parameter: `{param}`", param)
    split = _union_split(first["loc"])
    if split is not None:  # a value none of the union's members took: list what they are
        prefix = first["loc"][:split]
        tags = [e["loc"][split] for e in errors
                if e["loc"][:split] == prefix and len(e["loc"]) > split]
        param = _param_path(prefix)
        expected = ", ".join(dict.fromkeys(str(t) for t in tags))
        return bad_request(f"Invalid type for `{param}`: expected one of {expected}", param)
    return bad_request(f"Invalid value for `{param}`: {first['msg']}", param)


def parse_request(model_cls: type[M], body: bytes | str | dict[str, Any]) -> M:
    """Validate a request body (raw JSON or already parsed); APIError 400 on any problem."""
    data = body if isinstance(body, dict) else parse_json_body(body)
    # A top-level null means "not given", as in OpenAI's API (clients send nulls for unset).
    data = {k: v for k, v in data.items() if v is not None}
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        raise validation_error(e) from None


# ---- engine parameters ---------------------------------------------------------------------

def to_sampling_params(req: SamplingRequest, max_tokens: int | None) -> SamplingParams:
    """The engine's SamplingParams for `req`, with the token budget decided by the caller."""
    try:
        return SamplingParams(max_tokens=max_tokens, **req.sampling_kwargs())
    except InvalidRequest as e:
        raise bad_request(str(e), req.param_for(e.param)) from None
