"""response_format over HTTP with the tiny random model: enforced, not just accepted."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from tests.serving.conftest import HELLO, Api, assert_error

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 8},
                   "temps": {"type": "array", "maxItems": 3,
                             "items": {"type": "integer", "minimum": -50, "maximum": 50}},
                   "sunny": {"type": "boolean"}},
    "required": ["city", "temps", "sunny"],
}


def json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "w", "schema": schema,
                                                   "strict": True}}


@pytest.mark.parametrize("seed", range(2))
async def test_json_schema_answers_validate(api: Api, seed: int) -> None:
    resp = await api.chat(messages=HELLO, response_format=json_schema_format(SCHEMA),
                          seed=seed, max_tokens=150, n=2)
    assert resp.status == 200, resp.text
    for choice in resp.json["choices"]:
        assert choice["finish_reason"] == "stop"
        jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)


async def test_json_object_streams_an_object(api: Api) -> None:
    stream = await api.stream("/v1/chat/completions", {
        "messages": HELLO, "response_format": {"type": "json_object"}, "seed": 3,
        "max_tokens": 150})
    assert stream.status == 200, stream.text
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in stream.events)
    if stream.events[-1]["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(text), dict)
    else:
        assert text.startswith("{")


@pytest.mark.parametrize(("fmt", "param"), [
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}},
     "response_format.json_schema"),
    ({"type": "xml"}, "response_format.type"),
    (json_schema_format({"properties": {"a": {"$ref": "#/$defs/missing"}}}), "response_format"),
])
async def test_bad_formats_are_400(api: Api, fmt: dict[str, Any], param: str) -> None:
    assert_error(await api.chat(messages=HELLO, response_format=fmt), 400, param=param)


async def test_guided_with_min_tokens_is_400(api: Api) -> None:
    resp = await api.chat(messages=HELLO, response_format={"type": "json_object"},
                          min_tokens=2)
    assert_error(resp, 400, param="min_tokens")


async def test_completions_honour_response_format(api: Api) -> None:
    resp = await api.completion(prompt="Weather:", response_format=json_schema_format(SCHEMA),
                                seed=5, max_tokens=150)
    assert resp.status == 200, resp.text
    choice = resp.json["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["text"]), SCHEMA)
