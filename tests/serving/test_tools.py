"""Tool calling over HTTP with the tiny random model: the grammar makes every call valid,
whatever the weights; validation errors are 400s naming the field."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from engine import AsyncEngine
from tests.serving.conftest import API_KEY, HELLO, LONG, MODEL, Api, assert_error
from tests.serving.openai_schema import check

WEATHER = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location", "days"],
}
TIME = {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}


@pytest.fixture
async def api(aiohttp_client: Any, long_engine: AsyncEngine) -> Api:
    """The server over the session's long-context engine (tests/serving/conftest.py)."""
    from serving.app import make_app
    from serving.served import ServedModel
    from serving.state import ServerSettings, ServerState

    state = ServerState([ServedModel(MODEL, long_engine, max_model_len=LONG)],
                        ServerSettings(api_key=API_KEY))
    return Api(await aiohttp_client(make_app(state)), long_engine, state)


def check_calls(calls: list[dict[str, Any]]) -> None:
    assert calls
    for call in calls:
        assert call["type"] == "function" and call["id"].startswith("call_")
        fn = call["function"]
        assert isinstance(fn["arguments"], str)
        jsonschema.validate(json.loads(fn["arguments"]), SCHEMAS[fn["name"]])


@pytest.mark.parametrize("seed", range(3))
async def test_required_calls_are_valid(api: Api, seed: int) -> None:
    resp = await api.chat(messages=HELLO, tools=TOOLS, tool_choice="required", seed=seed,
                          temperature=1.0, max_tokens=150, parallel_tool_calls=False)
    assert resp.status == 200, resp.text
    choice = resp.json["choices"][0]
    check_calls(choice["message"]["tool_calls"])
    assert len(choice["message"]["tool_calls"]) == 1
    assert choice["finish_reason"] == "tool_calls"


async def test_parallel_calls_are_each_valid(api: Api) -> None:
    resp = await api.chat(messages=HELLO, tools=TOOLS, tool_choice="required", seed=9,
                          max_tokens=120)
    choice = resp.json["choices"][0]
    calls = choice["message"]["tool_calls"]
    if choice["finish_reason"] == "length":  # the last call may be the one cut off
        calls = calls[:-1]
    else:
        assert choice["finish_reason"] == "tool_calls"
    if calls:
        check_calls(calls)


async def test_named_choice_calls_that_function_and_stops(api: Api) -> None:
    choice_ = {"type": "function", "function": {"name": "get_time"}}
    resp = await api.chat(messages=HELLO, tools=TOOLS, tool_choice=choice_, seed=1,
                          max_tokens=100, n=2)
    assert resp.status == 200, resp.text
    for choice in resp.json["choices"]:
        calls = choice["message"]["tool_calls"]
        check_calls(calls)
        assert [c["function"]["name"] for c in calls] == ["get_time"] * len(calls)
        assert choice["finish_reason"] == "stop"


async def test_auto_yields_text_or_valid_calls(api: Api) -> None:
    for seed in range(3):
        resp = await api.chat(messages=HELLO, tools=TOOLS, seed=seed, max_tokens=60)
        assert resp.status == 200, resp.text
        choice = resp.json["choices"][0]
        if choice["message"].get("tool_calls"):
            check_calls(choice["message"]["tool_calls"])
            assert choice["finish_reason"] == "tool_calls"
        else:
            assert choice["finish_reason"] in ("stop", "length")


async def test_length_wins_when_the_call_is_cut(api: Api) -> None:
    resp = await api.chat(messages=HELLO, tools=TOOLS, tool_choice="required", max_tokens=3)
    assert resp.json["choices"][0]["finish_reason"] == "length"


async def test_streamed_call_reassembles_to_the_plain_one(api: Api) -> None:
    body = {"messages": HELLO, "tools": TOOLS, "tool_choice": "required", "seed": 4,
            "max_tokens": 150, "parallel_tool_calls": False}
    plain_body = (await api.chat(**body)).json
    check(plain_body, "/chat/completions")  # OpenAI's published shape, tool_calls included
    plain = plain_body["choices"][0]
    stream = await api.stream("/v1/chat/completions", body)
    assert stream.status == 200, stream.text
    for ev in stream.events:
        check(ev, "/chat/completions", media="text/event-stream")
    calls: dict[int, dict[str, Any]] = {}
    finish = []
    for ev in stream.events[1:]:
        choice = ev["choices"][0]
        delta = choice["delta"]
        assert "content" not in delta or "tool_calls" not in delta  # never mixed
        for frag in delta.get("tool_calls", []):
            if frag["index"] not in calls:  # the first fragment of a call
                assert frag["type"] == "function" and frag["id"].startswith("call_")
                assert frag["function"]["arguments"] == ""
                calls[frag["index"]] = {"name": frag["function"]["name"], "arguments": ""}
            else:
                assert set(frag) == {"index", "function"}
                assert set(frag["function"]) == {"arguments"}
                calls[frag["index"]]["arguments"] += frag["function"]["arguments"]
        finish.append(choice["finish_reason"])
    assert finish[-1] == "tool_calls" and not any(finish[:-1])
    assert [calls[i] for i in sorted(calls)] == [c["function"] for c in
                                                 plain["message"]["tool_calls"]]


async def test_legacy_functions_dialect(api: Api) -> None:
    fn = {"name": "get_current_weather", "description": "Get the current weather",
          "parameters": {"type": "object", "properties": {
              "location": {"type": "string", "maxLength": 10},
              "days": {"type": "number", "minimum": 0, "maximum": 30},
              "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}},
          "required": ["location", "days"]}
    resp = await api.chat(messages=HELLO, functions=[fn], function_call="get_current_weather",
                          max_tokens=150, seed=0)
    assert resp.status == 200, resp.text
    check(resp.json, "/chat/completions")
    choice = resp.json["choices"][0]
    assert choice["finish_reason"] == "function_call"
    call = choice["message"]["function_call"]
    assert call["name"] == "get_current_weather" and "tool_calls" not in choice["message"]
    args = json.loads(call["arguments"])
    assert {"location", "days"} <= set(args)  # the function-level `required` is honoured
    jsonschema.validate(args, fn["parameters"])


async def test_second_turn_with_a_tool_result(api: Api) -> None:
    messages = [*HELLO,
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_time", "arguments": '{"zone": "UTC"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}]
    resp = await api.chat(messages=messages, tools=TOOLS, max_tokens=8)
    assert resp.status == 200, resp.text
    legacy = [*HELLO, {"role": "assistant", "content": None,
                       "function_call": {"name": "f", "arguments": "{}"}},
              {"role": "function", "name": "f", "content": "done"}]
    resp = await api.chat(messages=legacy, max_tokens=4)
    assert resp.status == 200, resp.text


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": []}, "tools"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]},
     "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "nonsense"}}}}}]},
     "tools[0].function.parameters"),
    ({"tools": TOOLS * 2}, "tools"),
    # a schema jsonschema accepts but the grammar engine cannot compile (dangling $ref)
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}}]}, "tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"functions": [{"name": "f"}], "function_call": "g"}, "function_call"),
    ({"functions": [{"name": "f"}], "tools": TOOLS}, "functions"),
])
async def test_bad_tool_requests_are_400(api: Api, body: dict[str, Any], param: str) -> None:
    resp = await api.chat(messages=HELLO, **body)
    assert_error(resp, 400, param=param, type="invalid_request_error")


async def test_tool_choice_none_is_plain_text(api: Api) -> None:
    resp = await api.chat(messages=HELLO, tools=TOOLS, tool_choice="none", max_tokens=5)
    assert resp.status == 200
    message = resp.json["choices"][0]["message"]
    assert "tool_calls" not in message and isinstance(message["content"], str)


async def test_streamed_choices_keep_their_own_calls_and_logprobs(api: Api) -> None:
    body = {"messages": HELLO, "tools": TOOLS, "seed": 6, "max_tokens": 120, "n": 2,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "logprobs": True, "stream_options": {"include_usage": True}}
    stream = await api.stream("/v1/chat/completions", body)
    assert stream.status == 200, stream.text
    args: dict[int, str] = {0: "", 1: ""}
    logprobs = {0: 0, 1: 0}
    finish: dict[int, str] = {}
    *events, usage = stream.events
    for ev in events:
        choice = ev["choices"][0]
        i = choice["index"]
        for frag in choice["delta"].get("tool_calls", []):
            assert frag["index"] == 0  # one call per choice
            args[i] += frag["function"]["arguments"]
        if choice["logprobs"]:
            logprobs[i] += len(choice["logprobs"]["content"])
        if choice["finish_reason"]:
            finish[i] = choice["finish_reason"]
    assert finish == {0: "stop", 1: "stop"}
    for i in (0, 1):
        jsonschema.validate(json.loads(args[i]), WEATHER)
    # every generated token's logprob arrives, on some chunk of its choice
    assert logprobs[0] + logprobs[1] == usage["usage"]["completion_tokens"]
