"""serving.requests and the response builders, without a model: parsing, validation (every
error names its `param`), the SamplingParams mapping, logprob shapes, deltas and merging."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from engine import CompletionOutput, Logprob, PositionLogprobs, RequestOutput
from serving.chat import chat_chunk, chat_logprobs, chat_response
from serving.completions import completion_chunk, completion_logprobs
from serving.errors import APIError
from serving.generation import merge
from serving.requests import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_request,
    to_sampling_params,
)
from serving.responses import ResponseMeta

USER = [{"role": "user", "content": "hi"}]


def chat(**body: Any) -> ChatCompletionRequest:
    req = parse_request(ChatCompletionRequest, {"model": "m", "messages": USER, **body})
    req.check_supported()
    return req


def completion(**body: Any) -> CompletionRequest:
    req = parse_request(CompletionRequest, {"model": "m", "prompt": "hi", **body})
    req.check_supported()
    return req


def error_of(fn: Any, *args: Any, **kw: Any) -> APIError:
    with pytest.raises(APIError) as info:
        fn(*args, **kw)
    err = info.value
    assert err.status == 400 and err.type == "invalid_request_error"
    assert err.message
    return err


# ---- parsing -----------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"{", b"", b"\xff\xfe", b'{"a": NaN}', b'{"a": Infinity}'])
def test_malformed_json_is_400(raw: bytes) -> None:
    err = error_of(parse_request, ChatCompletionRequest, raw)
    assert err.param is None


@pytest.mark.parametrize("raw", [b"[]", b"1", b'"x"', b"null"])
def test_body_must_be_an_object(raw: bytes) -> None:
    assert "object" in error_of(parse_request, ChatCompletionRequest, raw).message


def test_raw_json_and_dict_bodies_parse_alike() -> None:
    body = {"model": "m", "messages": USER, "temperature": 0.5}
    a = parse_request(ChatCompletionRequest, json.dumps(body).encode())
    b = parse_request(ChatCompletionRequest, body)
    assert a == b and a.temperature == 0.5


def test_unknown_fields_are_ignored() -> None:
    req = chat(some_vendor_extra={"x": 1}, metadata={"a": "b"})
    assert not hasattr(req, "some_vendor_extra")


CHAT_ERRORS = [
    ({"model": 5}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"temperature": "0.5"}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"n": 0}, "n"),
    ({"n": True}, "n"),
    ({"n": 1.5}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_completion_tokens": -3}, "max_completion_tokens"),
    ({"stop": 5}, "stop"),
    ({"stop": ["a", 3]}, "stop"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"frequency_penalty": -2.5}, "frequency_penalty"),
    ({"logit_bias": {"5": "x"}}, "logit_bias"),
    ({"logit_bias": [1]}, "logit_bias"),
    ({"seed": "1"}, "seed"),
    ({"user": 5}, "user"),
    ({"stream": "yes"}, "stream"),
    ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"logprobs": 1}, "logprobs"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"top_k": -2}, "top_k"),
    ({"min_p": 1.5}, "min_p"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"min_tokens": -1}, "min_tokens"),
    ({"ignore_eos": "true"}, "ignore_eos"),
    ({"stop_token_ids": ["a"]}, "stop_token_ids"),
    ({"skip_special_tokens": 0}, "skip_special_tokens"),
    ({"include_stop_str_in_output": "no"}, "include_stop_str_in_output"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"tool_choice": 3}, "tool_choice"),
]


@pytest.mark.parametrize(("body", "param"), CHAT_ERRORS)
def test_chat_validation_names_the_param(body: dict[str, Any], param: str) -> None:
    data = {"model": "m", "messages": USER, **body}
    err = error_of(parse_request, ChatCompletionRequest, data)
    assert err.param == param, err.message
    assert param in err.message


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": 5}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": [[1], "a"]}, "prompt"),
    ({"logprobs": True}, "logprobs"),
    ({"logprobs": 21}, "logprobs"),
    ({"echo": 1}, "echo"),
    ({"best_of": 0}, "best_of"),
    ({"suffix": 3}, "suffix"),
])
def test_completion_validation_names_the_param(body: dict[str, Any], param: str) -> None:
    err = error_of(parse_request, CompletionRequest, {"model": "m", "prompt": "x", **body})
    assert err.param == param, err.message


@pytest.mark.parametrize("body", [{"messages": USER}, {"messages": USER, "model": None}])
def test_missing_model_is_named(body: dict[str, Any]) -> None:
    err = error_of(parse_request, ChatCompletionRequest, body)
    assert err.param == "model" and "Missing" in err.message


def test_top_level_nulls_mean_defaults() -> None:
    nulls = dict.fromkeys(["n", "stream", "stream_options", "stop", "temperature", "seed",
                           "ignore_eos", "min_tokens", "skip_special_tokens", "logprobs",
                           "include_stop_str_in_output", "tools", "response_format"])
    req = chat(**nulls)
    assert req.n == 1 and req.stream is False and req.skip_special_tokens is True
    p = to_sampling_params(req, 4)
    assert p.n == 1 and p.temperature == 1.0 and p.logprobs is None


def test_union_type_error_lists_the_accepted_types() -> None:
    err = error_of(parse_request, CompletionRequest, {"model": "m", "prompt": 5})
    assert "list[int]" in err.message and "str" in err.message


@pytest.mark.parametrize("prompt", ["x", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_completion_prompt_forms(prompt: Any) -> None:
    prompts = completion(prompt=prompt).prompt_list()
    expected = [prompt] if isinstance(prompt, str) or isinstance(prompt[0], int) else prompt
    assert prompts == expected


def test_text_parts_are_accepted_and_passed_to_the_template() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    req = chat(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": parts}])
    msgs = req.template_messages()
    assert msgs == [{"role": "system", "content": "s"}, {"role": "user", "content": parts}]


def test_template_messages_keep_extra_fields_and_null_content() -> None:
    req = chat(messages=[{"role": "user", "content": "x", "name": "bob"},
                         {"role": "assistant"}])
    assert req.template_messages() == [{"role": "user", "content": "x", "name": "bob"},
                                       {"role": "assistant", "content": None}]


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
    {"type": "input_audio", "input_audio": {}},
    {"type": "text"},
])
def test_non_text_parts_are_400_naming_the_part(part: dict[str, Any]) -> None:
    content = [{"type": "text", "text": "look"}, part]
    err = error_of(chat, messages=[{"role": "user", "content": content}])
    assert err.param == "messages[0].content[1]"
    if part["type"] != "text":
        assert "not supported" in err.message and part["type"] in err.message


# ---- invalid or unsupported: rejected, never ignored ----------------------------------------

@pytest.mark.parametrize(("body", "param"), [
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
     "response_format.json_schema"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "x"},
     "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"functions": [{"name": "f"}], "function_call": "g"}, "function_call"),
    ({"function_call": "auto"}, "function_call"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_chat_unsupported_is_400(body: dict[str, Any], param: str) -> None:
    err = error_of(chat, **body)
    assert err.param == param


@pytest.mark.parametrize("body", [
    {"response_format": {"type": "text"}},
    {"response_format": {"type": "json_object"}},
    {"tools": [{"type": "function", "function": {"name": "f"}}]},
    {"functions": [{"name": "f"}], "function_call": {"name": "f"}},
    {"tools": [], "tool_choice": "none"},
    {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"},
    {"functions": [], "function_call": "none"},
    {"parallel_tool_calls": True},
    {"stream": True, "stream_options": {"include_usage": True}},
])
def test_chat_supported_variants_pass(body: dict[str, Any]) -> None:
    chat(**body)


@pytest.mark.parametrize(("body", "param"), [
    ({"suffix": "end"}, "suffix"),
    ({"best_of": 1, "n": 2}, "best_of"),
    ({"best_of": 3, "stream": True}, "best_of"),
    ({"max_tokens": 0}, "max_tokens"),  # only with echo (the prompt alone)
    ({"max_tokens": 0, "echo": True, "min_tokens": 1}, "min_tokens"),
    ({"max_tokens": -1, "echo": True}, "max_tokens"),
    ({"prompt": []}, "prompt"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_completion_unsupported_is_400(body: dict[str, Any], param: str) -> None:
    assert error_of(completion, **body).param == param


def test_echo_asks_for_prompt_logprobs_and_max_tokens_0_samples_one_hidden_token() -> None:
    p = to_sampling_params(completion(echo=True, logprobs=2), 16)
    assert p.prompt_logprobs == 2 and p.logprobs == 2
    assert to_sampling_params(completion(logprobs=2), 16).prompt_logprobs is None
    assert to_sampling_params(completion(echo=True), 16).prompt_logprobs is None
    echo_only = completion(echo=True, logprobs=1, max_tokens=0)
    assert echo_only.echo_only and echo_only.requested_max_tokens() == 1
    assert not completion(echo=True).echo_only


def test_include_usage_needs_stream() -> None:
    assert chat(stream=True, stream_options={"include_usage": True}).include_usage
    assert not chat(stream=True).include_usage
    assert not chat(stream=True, stream_options={}).include_usage


# ---- SamplingParams mapping ---------------------------------------------------------------

def test_defaults_keep_the_engine_defaults() -> None:
    p = to_sampling_params(chat(), None)
    assert (p.temperature, p.top_p, p.top_k, p.min_p, p.repetition_penalty) == (
        1.0, 1.0, 0, 0.0, 1.0)
    assert p.n == 1 and p.max_tokens is None and p.logprobs is None
    assert p.skip_special_tokens is True and p.stop == []


def test_every_parameter_reaches_sampling_params() -> None:
    req = chat(temperature=0.3, top_p=0.9, n=3, stop="x", presence_penalty=0.5,
               frequency_penalty=-0.5, logit_bias={"7": -100, "9": 5.5}, seed=42, top_k=5,
               min_p=0.1, repetition_penalty=1.2, min_tokens=2, ignore_eos=True,
               stop_token_ids=[4, 5], skip_special_tokens=False,
               include_stop_str_in_output=True, logprobs=True, top_logprobs=3)
    p = to_sampling_params(req, 20)
    assert (p.temperature, p.top_p, p.n, p.stop, p.seed) == (0.3, 0.9, 3, ["x"], 42)
    assert (p.presence_penalty, p.frequency_penalty) == (0.5, -0.5)
    assert p.logit_bias == {7: -100.0, 9: 5.5}
    assert (p.top_k, p.min_p, p.repetition_penalty, p.min_tokens) == (5, 0.1, 1.2, 2)
    assert p.ignore_eos and p.include_stop_str_in_output and not p.skip_special_tokens
    assert p.stop_token_ids == [4, 5] and p.logprobs == 3 and p.max_tokens == 20


def test_chat_logprobs_flag_maps_to_zero_alternatives() -> None:
    assert to_sampling_params(chat(logprobs=True), 5).logprobs == 0
    assert to_sampling_params(chat(logprobs=False), 5).logprobs is None


def test_completion_logprobs_and_best_of() -> None:
    p = to_sampling_params(completion(logprobs=4, best_of=3, n=2), 5)
    assert p.logprobs == 4 and p.best_of == 3 and p.n == 2


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert chat(max_tokens=5, max_completion_tokens=9).requested_max_tokens() == 9
    assert chat(max_tokens=5).requested_max_tokens() == 5
    assert chat().requested_max_tokens() is None


def test_completions_default_to_16_tokens_and_chat_to_the_rest_of_the_context() -> None:
    assert completion().requested_max_tokens() == 16
    assert completion(max_tokens=None).requested_max_tokens() == 16
    assert chat().requested_max_tokens() is None


def test_top_p_zero_means_greedy() -> None:
    p = to_sampling_params(chat(top_p=0), 5)
    assert p.top_k == 1 and p.greedy


@pytest.mark.parametrize(("body", "max_tokens", "param"), [
    ({"logit_bias": {"abc": 1}}, 5, "logit_bias"),
    ({"logit_bias": {"-3": 1}}, 5, "logit_bias"),
    ({"logit_bias": {"3": 101}}, 5, "logit_bias"),
    ({"stop": [""]}, 5, "stop"),
    ({"stop_token_ids": [-1]}, 5, "stop_token_ids"),
    ({"min_tokens": 9}, 5, "min_tokens"),
    # Bounded list inputs (their cost is paid at every token): 33 stops, a 513-character
    # stop, 257 stop token ids, 301 biased tokens.
    ({"stop": [str(i) for i in range(33)]}, 5, "stop"),
    ({"stop": "s" * 513}, 5, "stop"),
    ({"stop_token_ids": list(range(257))}, 5, "stop_token_ids"),
    ({"logit_bias": {str(i): 1 for i in range(301)}}, 5, "logit_bias"),
])
def test_sampling_params_errors_name_the_param(body: dict[str, Any], max_tokens: int,
                                               param: str) -> None:
    err = error_of(to_sampling_params, chat(**body), max_tokens)
    assert err.param == param, err.message


def test_engine_params_map_to_request_fields() -> None:
    req, creq = chat(), completion()
    assert req.param_for("prompt") == "messages" and creq.param_for("prompt") == "prompt"
    assert req.param_for("n") == "n" and req.param_for("logit_bias") == "logit_bias"
    assert req.param_for("stop_token_ids") == "stop_token_ids"
    assert req.param_for("guided") == creq.param_for("guided") == "response_format"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert chat(tools=[tool]).param_for("guided") == "tools"
    assert chat(max_completion_tokens=5).param_for("max_tokens") == "max_completion_tokens"
    assert req.param_for("best_of") is None  # not a chat field
    assert req.param_for(None) is None


# ---- response builders --------------------------------------------------------------------

def lp(token_id: int, token: str, logprob: float) -> Logprob:
    return Logprob(token_id, token, logprob, token.encode())


POSITIONS = [
    PositionLogprobs(lp(5, "He", -0.5), [lp(5, "He", -0.5), lp(6, "Hi", -1.5)]),
    PositionLogprobs(lp(7, "llo", -0.25), [lp(8, "y", -0.1)]),
    PositionLogprobs(lp(9, "!", -math.inf), []),
]


def test_chat_logprobs_shape() -> None:
    out = chat_logprobs(POSITIONS)
    assert out is not None and chat_logprobs(None) is None
    first = out["content"][0]
    assert first == {"token": "He", "logprob": -0.5, "bytes": [72, 101], "top_logprobs": [
        {"token": "He", "logprob": -0.5, "bytes": [72, 101]},
        {"token": "Hi", "logprob": -1.5, "bytes": [72, 105]}]}
    assert out["content"][2]["logprob"] == -9999.0  # JSON has no -Infinity
    json.dumps(out, allow_nan=False)


def test_completion_logprobs_shape_and_offsets() -> None:
    out, end = completion_logprobs(POSITIONS, 3)
    assert out["tokens"] == ["He", "llo", "!"]
    assert out["token_logprobs"] == [-0.5, -0.25, -9999.0]
    assert out["top_logprobs"][0] == {"He": -0.5, "Hi": -1.5}
    assert out["top_logprobs"][1] == {"y": -0.1, "llo": -0.25}  # the chosen one is included
    assert out["text_offset"] == [3, 5, 8] and end == 9
    json.dumps(out, allow_nan=False)


META = ResponseMeta("chatcmpl-1", "tiny", "fp_0123456789", 123)


def test_chunks_carry_usage_null_only_when_asked() -> None:
    with_usage = chat_chunk(META, 0, {"content": "x"}, True)
    assert with_usage["usage"] is None
    assert "usage" not in chat_chunk(META, 0, {"content": "x"}, False)
    # OpenAI's completion schema has no null usage: text chunks never carry the key.
    c = completion_chunk(ResponseMeta("cmpl-1", "tiny", "fp_0123456789", 123), 2, "x")
    assert c["object"] == "text_completion" and "usage" not in c
    assert c["choices"] == [{"index": 2, "text": "x", "logprobs": None, "finish_reason": None,
                             "stop_reason": None}]


def test_chat_chunk_shape() -> None:
    c = chat_chunk(META, 1, {"role": "assistant", "content": ""}, False)
    assert {k: c[k] for k in ("id", "object", "created", "model")} == {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 123, "model": "tiny"}
    assert c["choices"] == [{"index": 1, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None, "stop_reason": None}]


def test_chat_response_shape() -> None:
    final = RequestOutput("r", None, [1, 2], [
        CompletionOutput(0, "hello", [5, 6], "stop", "</s>"),
        CompletionOutput(1, "bye", [7], "length", None, POSITIONS[:1])])
    usage = {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    body = chat_response(META, final, usage)
    assert body["object"] == "chat.completion" and body["usage"] == usage
    first, second = body["choices"]
    assert first["message"] == {"role": "assistant", "content": "hello", "refusal": None}
    assert body["system_fingerprint"] == "fp_0123456789"
    assert (first["finish_reason"], first["stop_reason"], first["logprobs"]) == (
        "stop", "</s>", None)
    assert second["index"] == 1 and len(second["logprobs"]["content"]) == 1


# ---- merging ------------------------------------------------------------------------------

async def scripted(name: str, n: int, delay: float, closed: list[str]
                   ) -> AsyncGenerator[RequestOutput, None]:
    try:
        for i in range(n):
            await asyncio.sleep(delay)
            yield RequestOutput(name, None, [1], [CompletionOutput(0, "x" * (i + 1), [1])],
                                finished=i == n - 1)
    finally:
        closed.append(name)


async def test_merge_interleaves_and_closes_every_stream() -> None:
    closed: list[str] = []
    streams = [scripted("a", 3, 0.001, closed), scripted("b", 2, 0.0015, closed)]
    seen = [(i, out.outputs[0].text) async for i, out in merge(streams)]
    assert sorted(seen) == [(0, "x"), (0, "xx"), (0, "xxx"), (1, "x"), (1, "xx")]
    assert [t for i, t in seen if i == 0] == ["x", "xx", "xxx"]
    assert sorted(closed) == ["a", "b"]


async def test_closing_merge_early_closes_the_streams() -> None:
    closed: list[str] = []
    streams = [scripted("a", 100, 0.001, closed), scripted("b", 100, 0.001, closed)]
    merged = merge(streams)
    await anext(merged)
    await merged.aclose()
    assert sorted(closed) == ["a", "b"]


async def test_merge_of_one_stream_needs_no_tasks() -> None:
    closed: list[str] = []
    merged = merge([scripted("a", 5, 0, closed)])
    assert (await anext(merged))[0] == 0
    await merged.aclose()
    assert closed == ["a"]
