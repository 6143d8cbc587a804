"""Tool calling and structured output with the real SmolLM2 over HTTP, through the official
`openai` SDK (issue 6's acceptance list). SmolLM2's template knows no tools, so this also
covers the injected system prompt. A few dozen short requests, batched where possible."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import pytest

from tests.serving.servers import SMOL, Server, cache_prompt

pytestmark = pytest.mark.slow

WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 30},
                          "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                          "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "unit"]}
CONVERT = {"type": "object",
           "properties": {"amount": {"type": "number"},
                          "currencies": {"type": "array", "maxItems": 3,
                                         "items": {"enum": ["USD", "EUR", "JPY"]}}},
           "required": ["amount", "currencies"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER,
                                      "description": "Get the weather forecast for a city"}},
    {"type": "function", "function": {"name": "convert", "parameters": CONVERT,
                                      "description": "Convert money between currencies"}},
]
SCHEMAS = {"get_weather": WEATHER, "convert": CONVERT}
ASK = [{"role": "user", "content": "What is the weather like in Paris this week?"}]


def valid_call(name: str, arguments: str) -> None:
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


def test_twenty_seeded_forced_and_required_calls(smol_server: Server) -> None:
    client = smol_server.async_client()
    forced = {"type": "function", "function": {"name": "convert"}}

    async def one(seed: int) -> Any:
        return await client.chat.completions.create(
            model=SMOL, messages=ASK, tools=TOOLS, seed=seed, temperature=0.8, max_tokens=120,
            tool_choice=forced if seed % 2 else "required", parallel_tool_calls=False)

    async def run() -> list[Any]:
        return await asyncio.gather(*(one(seed) for seed in range(20)))

    answers = asyncio.run(run())
    for seed, chat in enumerate(answers):
        choice = chat.choices[0]
        assert choice.finish_reason == ("stop" if seed % 2 else "tool_calls"), choice
        assert len(choice.message.tool_calls) == 1
        call = choice.message.tool_calls[0]
        if seed % 2:
            assert call.function.name == "convert"
        valid_call(call.function.name, call.function.arguments)


def test_auto_gives_text_or_a_valid_call(smol_server: Server) -> None:
    chat = smol_server.client().chat.completions.create(model=SMOL, messages=ASK, tools=TOOLS,
                                                   temperature=0, max_tokens=40)
    choice = chat.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            valid_call(call.function.name, call.function.arguments)
    else:
        assert choice.message.content and choice.finish_reason in ("stop", "length")


def test_streamed_call_equals_the_plain_one(smol_server: Server) -> None:
    client = smol_server.client()
    kw = {"model": SMOL, "messages": ASK, "tools": TOOLS, "tool_choice": "required",
          "temperature": 0, "max_tokens": 100, "parallel_tool_calls": False}
    cache_prompt(smol_server, kw)  # both compared requests start from the same cache state
    plain = client.chat.completions.create(**kw).choices[0]
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(**kw, stream=True):
        choice = chunk.choices[0]
        assert not (choice.delta.content and choice.delta.tool_calls)
        for frag in choice.delta.tool_calls or []:
            entry = calls.setdefault(frag.index, {"name": "", "arguments": ""})
            entry["name"] += frag.function.name or ""
            entry["arguments"] += frag.function.arguments or ""
        finish = choice.finish_reason or finish
    assert finish == plain.finish_reason == "tool_calls"
    expected = [{"name": c.function.name, "arguments": c.function.arguments}
                for c in plain.message.tool_calls]
    assert [calls[i] for i in sorted(calls)] == expected
    for call in expected:
        valid_call(call["name"], call["arguments"])


def test_legacy_functions_example(smol_server: Server) -> None:
    """llama-api-function-calling.txt's request, written as valid JSON."""
    body = {
        "model": SMOL,
        "messages": [{"role": "user", "content": "What is the weather like in Boston?"}],
        "functions": [{
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {"type": "object", "properties": {
                "location": {"type": "string",
                             "description": "The city and state, e.g. San Francisco, CA"},
                "days": {"type": "number",
                         "description": "for how many days ahead you wants the forecast"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}},
            "required": ["location", "days"],
        }],
        "stream": False,
        "function_call": "get_current_weather",
        # Beyond the document: a seed for a repeatable test, and a bound on its length.
        "seed": 0,
        "max_tokens": 200,
    }
    status, answer = smol_server.http("POST", "/v1/chat/completions", body)
    assert status == 200, answer
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["content"] is None
    call = choice["message"]["function_call"]
    assert call["name"] == "get_current_weather" and isinstance(call["arguments"], str)
    args = json.loads(call["arguments"])
    assert {"location", "days"} <= set(args)
    jsonschema.validate(args, body["functions"][0]["parameters"])


def test_json_schema_answers_validate(smol_server: Server) -> None:
    schema = {"type": "object",
              "properties": {"capital": {"type": "string", "maxLength": 40},
                             "population_millions": {"type": "number"},
                             "languages": {"type": "array", "maxItems": 3,
                                           "items": {"type": "string", "maxLength": 20}}},
              "required": ["capital", "population_millions", "languages"]}
    chat = smol_server.client().chat.completions.create(
        model=SMOL, max_tokens=80, temperature=0.7, seed=1, n=3,
        messages=[{"role": "user", "content": "Describe France as JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "country", "schema": schema, "strict": True}})
    for choice in chat.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_second_turn_with_a_tool_result(smol_server: Server) -> None:
    client = smol_server.client()
    first = client.chat.completions.create(model=SMOL, messages=ASK, tools=TOOLS,
                                           tool_choice="required", temperature=0,
                                           parallel_tool_calls=False,
                                           max_tokens=100).choices[0].message
    call = first.tool_calls[0]
    messages = [*ASK, first.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id,
                 "content": json.dumps({"forecast": "sunny", "high": 24})}]
    second = client.chat.completions.create(model=SMOL, messages=messages, tools=TOOLS,
                                            tool_choice="none", temperature=0, max_tokens=30)
    answer = second.choices[0]
    assert answer.message.content and not answer.message.tool_calls
