"""Inputs that once gave 500s (or were wrongly accepted) are 400s with the OpenAI envelope,
and the server keeps serving (issue 14, item 7). The retrieval endpoints' share is in
test_retrieval_errors.py; malformed HTTP in test_connections.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from serving.json_body import MAX_JSON_DEPTH
from serving.schemas import MAX_SCHEMA_DEPTH
from tests.serving.conftest import HELLO, MODEL, Api, assert_error

ENDPOINTS = {  # path -> a valid body, whose "model" is a placeholder for the deep value
    "/v1/chat/completions": {"messages": HELLO, "max_tokens": 1},
    "/v1/completions": {"prompt": "hi", "max_tokens": 1},
    "/v1/embeddings": {"input": "hi"},
    "/tokenize": {"prompt": "hi"},
    "/detokenize": {"tokens": [5]},
}


def deep_list(levels: int) -> str:
    return "[" * levels + "]" * levels


def body_with(path: str, field: str, raw_value: str) -> str:
    """The endpoint's valid body with `field` set to some raw JSON text."""
    body = {"model": MODEL, **ENDPOINTS[path]}
    head = json.dumps(body)[:-1]
    return f'{head}, "{field}": {raw_value}}}'


async def test_a_deep_body_still_parses_below_the_bound(api: Api) -> None:
    # An unknown field is ignored, however deep: this one is just inside the bound.
    raw = body_with("/v1/chat/completions", "metadata", deep_list(MAX_JSON_DEPTH - 1))
    resp = await api.post("/v1/chat/completions", raw=raw)
    assert resp.status == 200, resp.text


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 1000, 100_000])
@pytest.mark.parametrize("path", ENDPOINTS)
async def test_json_nested_too_deep_is_400(api: Api, path: str, levels: int) -> None:
    resp = await api.post(path, raw=body_with(path, "metadata", deep_list(levels)))
    err = assert_error(resp, 400, code="json_too_deep")
    assert str(MAX_JSON_DEPTH) in err["message"]


def nested_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"anyOf": [schema]}
    return schema


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def tool(parameters: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "f", "parameters": parameters}}]


# {"type": "object", "properties": {"a": <anyOf x k>}} is 2k + 3 levels of JSON deep; the
# deepest here still fits the body's own bound (the body adds 4 levels around a tool's).
@pytest.mark.parametrize("levels", [MAX_SCHEMA_DEPTH // 2 + 1, 48, 60])
async def test_schema_nested_too_deep_is_400(api: Api, levels: int) -> None:
    obj = {"type": "object", "properties": {"a": nested_schema(levels)}}
    resp = await api.chat(messages=HELLO, max_tokens=1, response_format=response_format(obj))
    err = assert_error(resp, 400, param="response_format.json_schema", code="schema_too_deep")
    assert str(MAX_SCHEMA_DEPTH) in err["message"]
    resp = await api.completion(prompt="x", max_tokens=1, response_format=response_format(obj))
    assert_error(resp, 400, param="response_format.json_schema", code="schema_too_deep")
    resp = await api.chat(messages=HELLO, max_tokens=1, tools=tool(obj))
    assert_error(resp, 400, param="tools[0].function.parameters", code="schema_too_deep")


async def test_schema_at_the_depth_bound_is_served(api: Api) -> None:
    obj = {"type": "object", "properties": {"a": nested_schema(MAX_SCHEMA_DEPTH // 2 - 2)}}
    resp = await api.chat(messages=HELLO, max_tokens=3, response_format=response_format(obj))
    assert resp.status == 200, resp.text


@pytest.mark.parametrize("ref", [
    "http://127.0.0.1:9/schema.json", "https://example.com/s.json#/defs/a", "other.json",
    "urn:uuid:0b1d1e1c-0000-0000-0000-000000000000", "file:///etc/passwd",
])
async def test_remote_ref_is_refused(api: Api, ref: str) -> None:
    obj = {"type": "object", "properties": {"a": {"$ref": ref}}}
    resp = await api.chat(messages=HELLO, max_tokens=1, response_format=response_format(obj))
    err = assert_error(resp, 400, param="response_format.json_schema", code="remote_ref")
    assert ref in err["message"]
    resp = await api.chat(messages=HELLO, max_tokens=1, tools=tool(obj))
    assert_error(resp, 400, param="tools[0].function.parameters", code="remote_ref")


async def test_local_ref_is_served(api: Api) -> None:
    obj = {"type": "object", "$defs": {"n": {"type": "integer"}},
           "properties": {"a": {"$ref": "#/$defs/n"}}, "required": ["a"]}
    resp = await api.chat(messages=HELLO, max_tokens=12, response_format=response_format(obj))
    assert resp.status == 200, resp.text


SURROGATE = "\ud800"  # json.dumps writes it as the escape "\ud800": valid JSON, not Unicode


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": f"a{SURROGATE}"}]},
     "messages[0].content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": SURROGATE}]}]}, "messages[0].content[0].text"),
    ("/v1/chat/completions", {"messages": HELLO, "stop": ["x", SURROGATE]}, "stop[1]"),
    ("/v1/completions", {"prompt": SURROGATE}, "prompt"),
    ("/v1/completions", {"prompt": ["ok", f"x{SURROGATE}y"]}, "prompt[1]"),
    ("/v1/embeddings", {"input": SURROGATE}, "input"),
    ("/v1/embeddings", {"input": ["a", SURROGATE]}, "input[1]"),
    ("/tokenize", {"prompt": SURROGATE}, "prompt"),
    ("/tokenize", {"messages": [{"role": "user", "content": SURROGATE}]},
     "messages[0].content"),
    ("/v1/chat/completions", {"messages": HELLO, "metadata": {SURROGATE: 1}}, "metadata"),
])
async def test_lone_surrogates_are_400_naming_the_field(api: Api, path: str,
                                                        body: dict[str, Any],
                                                        param: str) -> None:
    resp = await api.post(path, {"model": MODEL, **body})
    err = assert_error(resp, 400, param=param, code="invalid_unicode")
    assert "surrogate" in err["message"]


@pytest.mark.parametrize("tool_calls", [
    "garbage", 5, {"id": "x"}, ["garbage"],
    [{"id": "c1", "type": "function", "function": "f"}],
    [{"id": "c1", "type": "function", "function": {"name": 3, "arguments": "{}"}}],
    [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": 7}}],
    [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
    [{"id": "c1", "type": "custom", "function": {"name": "f", "arguments": "{}"}}],
])
async def test_malformed_tool_calls_in_a_message_are_400(api: Api, tool_calls: Any) -> None:
    messages = [*HELLO, {"role": "assistant", "content": None, "tool_calls": tool_calls},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    resp = await api.chat(messages=messages, max_tokens=1)
    err = assert_error(resp, 400)
    assert err["param"].startswith("messages[1].tool_calls"), err


@pytest.mark.parametrize("arguments", ['{"a": 1}', {"a": 1}], ids=["string", "object"])
async def test_well_formed_tool_calls_in_a_message_are_served(api: Api, arguments: Any) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    messages = [*HELLO, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    resp = await api.chat(messages=messages, max_tokens=1)
    assert resp.status == 200, resp.text


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
])
@pytest.mark.parametrize("path", ENDPOINTS)
async def test_json_sent_as_another_type_is_400(api: Api, path: str, content_type: str) -> None:
    raw = json.dumps({"model": MODEL, **ENDPOINTS[path]})
    resp = await api.post(path, raw=raw, headers={"Content-Type": content_type})
    err = assert_error(resp, 400, code="unsupported_content_type")
    assert "application/json" in err["message"]


@pytest.mark.parametrize("content_type", [None, "application/json",
                                          "application/json; charset=utf-8",
                                          "application/vnd.api+json"])
async def test_json_content_types_are_accepted(api: Api, content_type: str | None) -> None:
    raw = json.dumps({"model": MODEL, "prompt": "hi"}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    async with api.client.post("/tokenize", data=raw, headers={
            **headers, "Authorization": "Bearer sk-test"}, skip_auto_headers={
            "Content-Type"}) as r:
        assert r.status == 200, await r.text()
