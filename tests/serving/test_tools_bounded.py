"""Tools beside a response_format, and guided requests that end by themselves.

The tiny random model with EOS banned (logit_bias) is a model that never wants to stop: any
guided request that can only end through EOS would run to max_tokens. Each shape here must
end through its grammar (bounded numbers, a bounded call list) or the repeat guard, far
below max_tokens. Strings are bounded in these schemas (maxLength / enum): the default bound
of an unbounded string (4096 characters) is longer than these runs (tests/engine/guided/
test_bounds.py checks it with a smaller one).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pydantic
import pytest

from engine import AsyncEngine
from tests.serving.conftest import API_KEY, EOS_ID, HELLO, LONG, MODEL, Api
from tests.serving.test_tools import SCHEMAS, TOOLS, check_calls

MAX_TOKENS = 1000
ENDS_BELOW = 400  # every shape must end well before max_tokens
NO_EOS = {str(EOS_ID): -100.0}

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                         "population": {"type": "integer"},
                                         "area": {"type": "number"}},
        "required": ["city", "population", "area"], "additionalProperties": False}
ANSWER = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}}
COUNT = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0,
                                                "maximum": 100000}}, "required": ["n"]}
COUNTER = [{"type": "function", "function": {"name": "count", "parameters": COUNT}}]
TIME_TOOL = [t for t in TOOLS if t["function"]["name"] == "get_time"]


async def make(aiohttp_client: Any, engine: AsyncEngine, **settings: Any) -> Api:
    from serving.app import make_app
    from serving.served import ServedModel
    from serving.state import ServerSettings, ServerState

    state = ServerState([ServedModel(MODEL, engine, max_model_len=LONG)],
                        ServerSettings(api_key=API_KEY, **settings))
    return Api(await aiohttp_client(make_app(state)), engine, state)


@pytest.fixture
async def api(aiohttp_client: Any, long_engine: AsyncEngine) -> Api:
    return await make(aiohttp_client, long_engine)


def check_answer(message: dict[str, Any]) -> None:
    assert not message.get("tool_calls"), message
    jsonschema.validate(json.loads(message["content"]), CITY)


# ---- response_format together with tools ---------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
async def test_auto_answers_in_the_schema_or_calls(api: Api, seed: int) -> None:
    resp = await api.chat(messages=HELLO, tools=TOOLS, response_format=ANSWER, seed=seed,
                          max_tokens=MAX_TOKENS)
    assert resp.status == 200, resp.text
    choice = resp.json["choices"][0]
    if choice["message"].get("tool_calls"):
        check_calls(choice["message"]["tool_calls"])
        assert choice["message"]["content"] is None
        assert choice["finish_reason"] == "tool_calls"
    else:
        check_answer(choice["message"])
        assert choice["finish_reason"] == "stop"


async def test_auto_can_take_either_branch(api: Api) -> None:
    """Over a few seeds the random model both answers and calls: the grammar offers both."""
    kinds = set()
    for seed in range(12):
        resp = await api.chat(messages=HELLO, tools=TIME_TOOL, response_format=ANSWER,
                              seed=seed, max_tokens=MAX_TOKENS)
        kinds.add("calls" if resp.json["choices"][0]["message"].get("tool_calls") else "answer")
        if kinds == {"calls", "answer"}:
            return
    pytest.fail(f"only {kinds} in 12 seeds")


async def test_none_is_the_schema_only_and_required_the_tools_only(api: Api) -> None:
    resp = await api.chat(messages=HELLO, tools=TOOLS, tool_choice="none", seed=1,
                          response_format=ANSWER, max_tokens=MAX_TOKENS)
    check_answer(resp.json["choices"][0]["message"])
    for choice in ("required", {"type": "function", "function": {"name": "get_time"}}):
        resp = await api.chat(messages=HELLO, tools=TOOLS, tool_choice=choice, seed=1,
                              response_format=ANSWER, max_tokens=MAX_TOKENS)
        assert resp.status == 200, resp.text
        check_calls(resp.json["choices"][0]["message"]["tool_calls"])


@pytest.mark.parametrize("seed", range(3))
async def test_streamed_answer_or_calls_reassemble_to_the_plain_one(api: Api, seed: int) -> None:
    body = {"messages": HELLO, "tools": TOOLS, "response_format": ANSWER, "seed": seed,
            "max_tokens": MAX_TOKENS}
    plain = (await api.chat(**body)).json["choices"][0]
    stream = await api.stream("/v1/chat/completions", body)
    assert stream.status == 200, stream.text
    content, calls, finish = "", {}, None
    for ev in stream.events:
        choice = ev["choices"][0]
        content += choice["delta"].get("content") or ""
        for frag in choice["delta"].get("tool_calls", []):
            entry = calls.setdefault(frag["index"], {"name": frag["function"].get("name"),
                                                     "arguments": ""})
            entry["arguments"] += frag["function"]["arguments"]
        finish = choice["finish_reason"] or finish
    assert finish == plain["finish_reason"]
    assert (content or None) == plain["message"]["content"]
    assert [calls[i] for i in sorted(calls)] == [
        c["function"] for c in plain["message"].get("tool_calls") or []]


async def test_legacy_functions_with_a_response_format(api: Api) -> None:
    fns = [t["function"] for t in TOOLS]
    for seed in range(3):
        resp = await api.chat(messages=HELLO, functions=fns, response_format=ANSWER, seed=seed,
                              max_tokens=MAX_TOKENS)
        assert resp.status == 200, resp.text
        choice = resp.json["choices"][0]
        call = choice["message"].get("function_call")
        if call:
            jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
            assert choice["finish_reason"] == "function_call"
        else:
            check_answer(choice["message"])


class City(pydantic.BaseModel):
    city: str = pydantic.Field(max_length=10)
    population: int
    area: float


class GetTime(pydantic.BaseModel):
    zone: str = pydantic.Field(json_schema_extra={"enum": ["UTC", "CET"]})


async def test_sdk_parse_with_a_pydantic_answer_and_a_pydantic_tool(api: Api) -> None:
    """What openai-agents and pydantic-ai send: a strict json_schema response_format beside
    strict function tools, read back by the SDK's own parser."""
    client = openai.AsyncOpenAI(base_url=str(api.client.make_url("/v1")), api_key=API_KEY)
    seen = set()
    for seed in range(6):
        done = await client.chat.completions.parse(
            model=MODEL, messages=HELLO, response_format=City, seed=seed,
            tools=[openai.pydantic_function_tool(GetTime, name="get_time")],
            max_tokens=MAX_TOKENS)
        message = done.choices[0].message
        if message.tool_calls:
            seen.add("calls")
            assert isinstance(message.tool_calls[0].function.parsed_arguments, GetTime)
        else:
            seen.add("answer")
            assert isinstance(message.parsed, City)
    assert seen  # each reply was one of the two, parsed by the SDK
    await client.close()


# ---- every guided request ends by itself ---------------------------------------------------

SHAPES: dict[str, dict[str, Any]] = {
    # a repeated call ends the list: only two distinct get_time calls exist
    "required-repeats": {"tools": TIME_TOOL, "tool_choice": "required"},
    # many distinct calls exist: the per-message bound ends the list
    "required-many": {"tools": COUNTER, "tool_choice": "required"},
    "named": {"tools": TOOLS, "tool_choice": {"type": "function",
                                              "function": {"name": "get_weather"}}},
    "auto-with-answer": {"tools": TOOLS, "response_format": ANSWER},
    "legacy-with-answer": {"functions": [t["function"] for t in TOOLS],
                           "response_format": ANSWER},
    "answer-only": {"response_format": ANSWER},
}


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_every_guided_shape_ends_without_eos(aiohttp_client: Any, long_engine: AsyncEngine,
                                                   shape: str, seed: int) -> None:
    api = await make(aiohttp_client, long_engine, max_tool_calls=3)
    body = {"messages": HELLO, "seed": seed, "max_tokens": MAX_TOKENS, "logit_bias": NO_EOS,
            **SHAPES[shape]}
    resp = await api.chat(**body)
    assert resp.status == 200, resp.text
    choice = resp.json["choices"][0]
    assert choice["finish_reason"] != "length", choice
    assert resp.json["usage"]["completion_tokens"] < ENDS_BELOW, resp.json["usage"]
    calls = choice["message"].get("tool_calls") or []
    assert len(calls) <= 3
    keys = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]
    assert all(k not in keys[:i] for i, k in enumerate(keys)), keys  # no call twice


async def test_a_model_that_loves_one_digit_ends_its_numbers(api: Api) -> None:
    """The '1111...' failure, made certain by logit_bias: unbounded integer and number fields
    get at most 19 digits a part, and the answer ends by its grammar."""
    one = api.engine.tokenizer.encode("1", add_special_tokens=False)
    resp = await api.chat(messages=HELLO, response_format=ANSWER, seed=0, max_tokens=MAX_TOKENS,
                          logit_bias={**NO_EOS, str(one[0]): 100.0})
    choice = resp.json["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    answer = json.loads(choice["message"]["content"])
    assert answer["population"] == int("1" * 19)
