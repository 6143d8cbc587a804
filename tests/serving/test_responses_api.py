"""The Responses API (POST /v1/responses, GET/DELETE /v1/responses/{id}) driven by the
official openai SDK against the server in-process.

Expected texts come from the offline engine on the same checkpoint (plain conversations)
or from /v1/chat/completions on the same conversation (tools and formats, which that
endpoint's own tests check); shapes are checked by validating every body and event against
the SDK's own pydantic types, which is stricter than the SDK's parsing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import jsonschema
import openai
import pydantic
import pytest
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent

from engine import AsyncEngine
from tests.serving.conftest import (
    API_KEY,
    LONG,
    MODEL,
    Api,
    Reference,
    assert_error,
    make_api,
    wait_idle,
)

STREAM_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)

CITY = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
        "required": ["city"], "additionalProperties": False}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
          "parameters": CITY}]
CHAT_TOOLS = [{"type": "function", "function": {"name": "get_weather",
                                                "description": "Weather in a city",
                                                "parameters": CITY}}]
ASK = "What is the weather in Paris?"


def sdk_for(api: Api) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(api.client.make_url("/v1")), api_key=API_KEY,
                              max_retries=0)


@pytest.fixture
async def rapi(aiohttp_client: Any, shared_engine: AsyncEngine, tmp_path: Path,
               api: Api) -> Api:
    """The server over the session's engine, storing under a fresh data directory (`api`
    first checks that the engine is idle)."""
    return await make_api(aiohttp_client, shared_engine, data_dir=tmp_path / "data")


@pytest.fixture
async def sdk(rapi: Api) -> AsyncIterator[openai.AsyncOpenAI]:
    client = sdk_for(rapi)
    yield client
    await client.close()


def check_shape(body: dict[str, Any]) -> SDKResponse:
    """The body satisfies the SDK's Response type, validated field by field."""
    return SDKResponse.model_validate(body)


# ---- text ----------------------------------------------------------------------------------


async def test_create_matches_offline_engine(sdk: openai.AsyncOpenAI, rapi: Api,
                                             ref: Reference) -> None:
    resp = await sdk.responses.create(model=MODEL, instructions="Be brief.", input="Hello there",
                                      temperature=0, max_output_tokens=8)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello there"}]
    expected = ref.chat(messages, temperature=0, max_tokens=8)
    out = expected.outputs[0]
    assert resp.object == "response" and resp.id.startswith("resp_") and resp.model == MODEL
    assert resp.output_text == out.text
    [item] = resp.output
    assert item.type == "message" and item.role == "assistant" and item.id.startswith("msg_")
    assert [c.type for c in item.content] == ["output_text"]
    assert resp.usage is not None
    assert resp.usage.input_tokens == len(expected.prompt_token_ids)
    assert resp.usage.output_tokens == len(out.token_ids)
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    if out.finish_reason == "length":
        assert resp.status == "incomplete" and item.status == "incomplete"
        assert resp.incomplete_details is not None
        assert resp.incomplete_details.reason == "max_output_tokens"
    else:
        assert resp.status == "completed" and item.status == "completed"
    assert resp.instructions == "Be brief." and resp.temperature == 0
    assert resp.max_output_tokens == 8 and resp.store is True
    raw = await rapi.post("/v1/responses", {"model": MODEL, "input": "Hello there",
                                            "max_output_tokens": 3})
    assert raw.status == 200, raw.text
    check_shape(raw.json)


async def test_input_items_render_like_the_chat_conversation(sdk: openai.AsyncOpenAI,
                                                             ref: Reference) -> None:
    items = [{"role": "developer", "content": "Answer in French."},
             {"type": "message", "role": "user",
              "content": [{"type": "input_text", "text": "Hi"},
                          {"type": "input_text", "text": " there"}]},
             {"type": "message", "role": "assistant",
              "content": [{"type": "output_text", "text": "Bonjour", "annotations": []}]},
             {"role": "user", "content": "And now?"}]
    resp = await sdk.responses.create(model=MODEL, input=items, temperature=0,
                                      max_output_tokens=6)
    messages = [{"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Bonjour"},
                {"role": "user", "content": "And now?"}]
    expected = ref.chat(messages, temperature=0, max_tokens=6)
    assert resp.output_text == expected.outputs[0].text
    assert resp.usage is not None
    assert resp.usage.input_tokens == len(expected.prompt_token_ids)


async def test_stream_event_sequence(sdk: openai.AsyncOpenAI, ref: Reference) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "input": "Hello there", "temperature": 0,
                              "max_output_tokens": 8}
    async with sdk.responses.stream(**kwargs) as stream:
        events = [event async for event in stream]
    # The last event holds the final response: response.completed, or response.incomplete
    # when max_output_tokens cut it (which the SDK's get_final_response() does not take).
    final = events[-1].response
    for event in events:
        STREAM_EVENT.validate_python(event.model_dump(exclude={"snapshot", "parsed"}))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    types = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert deltas, types
    terminal = "response.incomplete" if final.status == "incomplete" else "response.completed"
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * len(deltas),
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", terminal]
    expected = ref.chat([{"role": "user", "content": "Hello there"}], temperature=0,
                        max_tokens=8).outputs[0].text
    assert "".join(d.delta for d in deltas) == expected == final.output_text
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {final.output[0].id}
    assert final.id == events[0].response.id
    non_streamed = await sdk.responses.create(**kwargs)
    assert non_streamed.output_text == final.output_text
    assert non_streamed.usage == final.usage


async def test_sse_framing_has_event_lines_and_no_done(rapi: Api) -> None:
    body = {"model": MODEL, "input": "Hello there", "stream": True, "max_output_tokens": 4}
    async with rapi.client.post("/v1/responses", json=body,
                                headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = await resp.text()
    assert "[DONE]" not in text and text.endswith("\n\n")
    blocks = text[:-2].split("\n\n")
    for number, block in enumerate(blocks):
        event_line, data_line = block.split("\n")
        payload = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {payload['type']}"
        assert payload["sequence_number"] == number
    assert json.loads(blocks[-1].split("\n")[1][6:])["type"] in (
        "response.completed", "response.incomplete")


# ---- stored responses --------------------------------------------------------------------


async def test_previous_response_id_continues_the_conversation(sdk: openai.AsyncOpenAI,
                                                               ref: Reference) -> None:
    first = await sdk.responses.create(model=MODEL, instructions="Be brief.", input="Hello",
                                       temperature=0, max_output_tokens=5)
    second = await sdk.responses.create(model=MODEL, input="And then?", temperature=0,
                                        max_output_tokens=5, previous_response_id=first.id)
    # The earlier instructions are not carried over (OpenAI's rule); the turns are.
    messages = [{"role": "user", "content": "Hello"},
                {"role": "assistant", "content": first.output_text},
                {"role": "user", "content": "And then?"}]
    expected = ref.chat(messages, temperature=0, max_tokens=5)
    assert second.previous_response_id == first.id
    assert second.output_text == expected.outputs[0].text
    assert second.usage is not None
    assert second.usage.input_tokens == len(expected.prompt_token_ids)
    third = await sdk.responses.create(model=MODEL, input="Why?", temperature=0,
                                       max_output_tokens=5, previous_response_id=second.id)
    messages += [{"role": "assistant", "content": second.output_text},
                 {"role": "user", "content": "Why?"}]
    assert third.usage is not None
    assert third.usage.input_tokens == len(ref.chat_prompt_ids(messages))


async def test_retrieve_and_delete(sdk: openai.AsyncOpenAI, rapi: Api) -> None:
    created = await sdk.responses.create(model=MODEL, input="Hello", max_output_tokens=4,
                                         metadata={"run": "7"})
    got = await sdk.responses.retrieve(created.id)
    assert got.model_dump() == created.model_dump()
    assert got.metadata == {"run": "7"}
    raw = await rapi.request("DELETE", f"/v1/responses/{created.id}")
    assert raw.status == 200 and raw.json == {"id": created.id, "object": "response",
                                              "deleted": True}
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.responses.retrieve(created.id)
    assert info.value.code == "response_not_found"
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.responses.create(model=MODEL, input="Hi", previous_response_id=created.id)
    assert info.value.param == "previous_response_id"
    assert info.value.code == "previous_response_not_found"


async def test_store_false_keeps_nothing(sdk: openai.AsyncOpenAI, rapi: Api) -> None:
    resp = await sdk.responses.create(model=MODEL, input="Hello", max_output_tokens=3,
                                      store=False)
    assert resp.store is False
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(resp.id)
    assert not (rapi.state.settings.data_dir / "responses").exists()


async def test_a_restart_keeps_stored_responses(aiohttp_client: Any, shared_engine: AsyncEngine,
                                                rapi: Api, sdk: openai.AsyncOpenAI,
                                                ref: Reference) -> None:
    created = await sdk.responses.create(model=MODEL, input="Hello", temperature=0,
                                         max_output_tokens=4)
    folder = rapi.state.settings.data_dir / "responses"
    assert [p.name for p in folder.iterdir()] == [f"{created.id}.json"]  # no temp file left
    # A new server over the same data directory (what a restart leaves).
    again = await make_api(aiohttp_client, shared_engine, data_dir=rapi.state.settings.data_dir)
    client = sdk_for(again)
    try:
        assert (await client.responses.retrieve(created.id)).model_dump() == created.model_dump()
        follow = await client.responses.create(model=MODEL, input="More", temperature=0,
                                               max_output_tokens=4,
                                               previous_response_id=created.id)
    finally:
        await client.close()
    messages = [{"role": "user", "content": "Hello"},
                {"role": "assistant", "content": created.output_text},
                {"role": "user", "content": "More"}]
    assert follow.output_text == ref.chat(messages, temperature=0, max_tokens=4).outputs[0].text


async def test_without_a_data_dir_responses_live_in_memory(aiohttp_client: Any,
                                                           shared_engine: AsyncEngine,
                                                           api: Api) -> None:
    created = await api.post("/v1/responses", {"model": MODEL, "input": "Hi",
                                               "max_output_tokens": 2})
    assert created.status == 200, created.text
    got = await api.get(f"/v1/responses/{created.json['id']}")
    assert got.status == 200 and got.json == created.json


# ---- structured output --------------------------------------------------------------------


class Town(pydantic.BaseModel):
    city: Literal["Paris", "Rome"]


async def test_text_format_json_schema_through_parse(sdk: openai.AsyncOpenAI, rapi: Api) -> None:
    parsed = await sdk.responses.parse(model=MODEL, input="Where?", text_format=Town,
                                       temperature=0, max_output_tokens=40)
    assert parsed.status == "completed"
    assert isinstance(parsed.output_parsed, Town)
    schema = parsed.text.format.schema_  # type: ignore[union-attr]
    chat = await rapi.chat(messages=[{"role": "user", "content": "Where?"}], temperature=0,
                           max_tokens=40, response_format={"type": "json_schema", "json_schema": {
                               "name": "Town", "schema": schema}})
    assert parsed.output_text == chat.json["choices"][0]["message"]["content"]


async def test_text_format_json_object(sdk: openai.AsyncOpenAI, rapi: Api) -> None:
    resp = await sdk.responses.create(model=MODEL, input="JSON please", temperature=0,
                                      max_output_tokens=12, text={"format": {"type": "json_object"}})
    chat = await rapi.chat(messages=[{"role": "user", "content": "JSON please"}], temperature=0,
                           max_tokens=12, response_format={"type": "json_object"})
    assert resp.output_text == chat.json["choices"][0]["message"]["content"]
    assert resp.output_text.lstrip().startswith("{")
    assert resp.text is not None and resp.text.format.type == "json_object"


# ---- tools (a model with room for the tool prompt) ----------------------------------------


@pytest.fixture
async def tapi(aiohttp_client: Any, long_engine: AsyncEngine, tmp_path: Path) -> Api:
    from serving.app import make_app
    from serving.served import ServedModel
    from serving.state import ServerSettings, ServerState

    state = ServerState([ServedModel(MODEL, long_engine, max_model_len=LONG)],
                        ServerSettings(api_key=API_KEY, data_dir=tmp_path / "data"))
    return Api(await aiohttp_client(make_app(state)), long_engine, state)


@pytest.fixture
async def tsdk(tapi: Api) -> AsyncIterator[openai.AsyncOpenAI]:
    client = sdk_for(tapi)
    yield client
    await client.close()


def chat_items(message: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A chat answer as (kind, text or name, arguments) to compare with output items."""
    out = [("message", message["content"], "")] if message.get("content") else []
    return out + [("function_call", c["function"]["name"], c["function"]["arguments"])
                  for c in message.get("tool_calls") or []]


def response_items(resp: Any) -> list[tuple[str, str, str]]:
    return [("message", item.content[0].text, "") if item.type == "message" else
            ("function_call", item.name, item.arguments) for item in resp.output]


async def test_tool_round_trip(tsdk: openai.AsyncOpenAI, tapi: Api) -> None:
    first = await tsdk.responses.create(
        model=MODEL, input=ASK, tools=TOOLS, temperature=0, max_output_tokens=150,
        tool_choice={"type": "function", "name": "get_weather"})
    check_shape(first.model_dump(mode="json"))
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    assert call.status == "completed" and first.status == "completed"
    jsonschema.validate(json.loads(call.arguments), CITY)
    chat_first = await tapi.chat(messages=[{"role": "user", "content": ASK}], tools=CHAT_TOOLS,
                                 tool_choice={"type": "function",
                                              "function": {"name": "get_weather"}},
                                 temperature=0, max_tokens=150)
    assert response_items(first) == chat_items(chat_first.json["choices"][0]["message"])
    assert first.usage is not None
    assert first.usage.input_tokens == chat_first.json["usage"]["prompt_tokens"]

    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}
    second = await tsdk.responses.create(model=MODEL, previous_response_id=first.id,
                                         input=[result], tools=TOOLS, temperature=0,
                                         max_output_tokens=10)
    chat_second = await tapi.chat(
        messages=[{"role": "user", "content": ASK},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": call.call_id, "type": "function",
                       "function": {"name": call.name, "arguments": call.arguments}}]},
                  {"role": "tool", "tool_call_id": call.call_id, "content": "Sunny, 21 C"}],
        tools=CHAT_TOOLS, temperature=0, max_tokens=10)
    assert response_items(second) == chat_items(chat_second.json["choices"][0]["message"])
    assert second.usage is not None
    assert second.usage.input_tokens == chat_second.json["usage"]["prompt_tokens"]
    # The same turn with the history sent back as input items (no stored state).
    replay = await tsdk.responses.create(
        model=MODEL, input=[{"role": "user", "content": ASK}, *first.output, result],
        tools=TOOLS, temperature=0, max_output_tokens=10, store=False)
    assert response_items(replay) == response_items(second)


async def test_streamed_tool_call(tsdk: openai.AsyncOpenAI) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "input": ASK, "tools": TOOLS,
                              "tool_choice": "required", "parallel_tool_calls": False,
                              "temperature": 0, "max_output_tokens": 150}
    async with tsdk.responses.stream(**kwargs) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    for event in events:
        STREAM_EVENT.validate_python(event.model_dump(exclude={"snapshot", "parsed"}))
    types = [e.type for e in events]
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert pieces
    assert types == ["response.created", "response.in_progress", "response.output_item.added",
                     *["response.function_call_arguments.delta"] * len(pieces),
                     "response.function_call_arguments.done", "response.output_item.done",
                     "response.completed"]
    [call] = final.output
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert "".join(pieces) == done.arguments == call.arguments
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.arguments == ""
    assert added.item.call_id == call.call_id and added.item.name == "get_weather"
    non_streamed = await tsdk.responses.create(**kwargs)
    assert response_items(non_streamed) == response_items(final)


@pytest.mark.parametrize("choice", ["auto", "none"])
async def test_text_format_beside_tools(tapi: Api, choice: str) -> None:
    """As on chat: under `auto` the model calls a tool or answers in text.format; under
    `none` it answers in the format."""
    resp = await tapi.post("/v1/responses", {
        "model": MODEL, "input": ASK, "tools": TOOLS, "tool_choice": choice,
        "text": {"format": {"type": "json_object"}}, "max_output_tokens": 150})
    assert resp.status == 200, resp.text
    assert resp.json["output"]
    for item in resp.json["output"]:
        if item["type"] == "function_call":
            assert choice == "auto"
            continue
        text = item["content"][0]["text"]
        assert text.lstrip().startswith("{")
        if resp.json["status"] == "completed":  # else cut by max_output_tokens
            assert isinstance(json.loads(text), dict)


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "param"), [
    ({"model": MODEL}, "input"),
    ({"model": MODEL, "input": 3}, "input"),
    ({"model": MODEL, "input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
    ({"model": MODEL, "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": MODEL, "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "http://x/y.png"}]}]}, "input[0].content[0]"),
    ({"model": MODEL, "input": [{"type": "function_call_output", "output": "x"}]},
     "input[0].call_id"),
    ({"model": MODEL, "input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
     "input[0].arguments"),
    ({"model": MODEL, "input": []}, "input"),
    ({"model": MODEL, "input": "x", "temperature": 3}, "temperature"),
    ({"model": MODEL, "input": "x", "top_p": "1"}, "top_p"),
    ({"model": MODEL, "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": MODEL, "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"model": MODEL, "input": "x", "tools": [{"type": "function", "name": "bad name"}]},
     "tools[0].name"),
    ({"model": MODEL, "input": "x", "tools": [{"type": "function", "name": "f",
                                               "parameters": {"type": 5}}]},
     "tools[0].parameters"),
    ({"model": MODEL, "input": "x", "tools": TOOLS,
      "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"model": MODEL, "input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"model": MODEL, "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"model": MODEL, "input": "x", "text": {"format": {"type": "json_schema",
                                                        "schema": {}}}}, "text.format.name"),
    ({"model": MODEL, "input": "x", "text": {"format": {
        "type": "json_schema", "name": "n", "schema": {"type": "nope"}}}}, "text.format.schema"),
    ({"model": MODEL, "input": "x", "include": ["message.output_text.logprobs"]}, "include"),
    ({"model": MODEL, "input": "x", "reasoning": {"effort": "high"}}, "reasoning"),
    ({"model": MODEL, "input": "x", "background": True}, "background"),
    ({"model": MODEL, "input": "x", "truncation": "auto"}, "truncation"),
    ({"model": MODEL, "input": "x", "metadata": {"k": "v" * 513}}, "metadata"),
    ({"model": MODEL, "input": "word " * 300}, "input"),
])
async def test_bad_requests_name_the_param(api: Api, body: dict[str, Any], param: str) -> None:
    assert_error(await api.post("/v1/responses", body), 400, param=param,
                 type="invalid_request_error")


async def test_not_found_errors(api: Api) -> None:
    assert_error(await api.post("/v1/responses", {"model": "nope", "input": "x"}), 404,
                 param="model", code="model_not_found")
    assert_error(await api.get("/v1/responses/resp_nope"), 404, code="response_not_found")
    assert_error(await api.get("/v1/responses/..%2F..%2Fetc"), 404)
    assert_error(await api.request("DELETE", f"/v1/responses/resp_{'0' * 32}"), 404,
                 code="response_not_found")
    assert_error(await api.post("/v1/responses", {
        "model": MODEL, "input": "x", "previous_response_id": f"resp_{'a' * 32}"}), 404,
        param="previous_response_id", code="previous_response_not_found")


async def test_sdk_raises_bad_request_with_param(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.responses.create(model=MODEL, input="x", temperature=5)
    assert info.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.responses.create(model=MODEL, input="word " * 300)
    assert info.value.code == "context_length_exceeded"


def test_data_dir_flag_reaches_the_settings(tmp_path: Path) -> None:
    from serving.cli import parse_args

    plan = parse_args(["--data-dir", str(tmp_path / "d"), "--no-embedding-model"])
    assert plan.settings.data_dir == tmp_path / "d"


async def test_client_disconnect_aborts_and_stores_nothing(rapi: Api,
                                                          sdk: openai.AsyncOpenAI) -> None:
    body = {"model": MODEL, "input": "Hello there", "temperature": 0, "max_output_tokens": 200}
    full = await sdk.responses.create(**body, store=False)
    assert full.usage is not None and full.usage.output_tokens == 200  # runs to the limit
    engine = rapi.engine
    before = engine.stats().generated_tokens
    resp = await rapi.client.post("/v1/responses", json={**body, "stream": True},
                                  headers={"Authorization": f"Bearer {API_KEY}"})
    assert resp.status == 200
    deltas = 0
    while deltas < 3:
        line = await resp.content.readline()
        assert line, "the stream ended before the disconnect"
        deltas += line.startswith(b"event: response.output_text.delta")
    resp.close()  # closes the connection
    await wait_idle(engine)
    stats = engine.stats()
    assert engine.num_active == 0 and stats.num_running == 0 and stats.num_waiting == 0
    assert stats.kv_blocks_free == stats.kv_blocks
    assert stats.generated_tokens - before < 150  # aborted, not run to the end
    assert not (rapi.state.settings.data_dir / "responses").exists()
    ok = await rapi.post("/v1/responses", {"model": MODEL, "input": "Hi", "max_output_tokens": 2})
    assert ok.status == 200, ok.text


async def test_a_response_that_cannot_be_stored_fails(aiohttp_client: Any,
                                                      shared_engine: AsyncEngine, api: Api,
                                                      tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # the data directory is a file: nothing can be written under it
    server = await make_api(aiohttp_client, shared_engine, data_dir=blocked)
    body = {"model": MODEL, "input": "Hello", "max_output_tokens": 3}
    err = assert_error(await server.post("/v1/responses", body), 500, type="server_error")
    assert "could not be stored" in err["message"]
    stream = await server.client.post("/v1/responses", json={**body, "stream": True},
                                      headers={"Authorization": f"Bearer {API_KEY}"})
    blocks = (await stream.text()).strip().split("\n\n")
    last = json.loads(blocks[-1].split("\n")[1].removeprefix("data: "))
    STREAM_EVENT.validate_python(last)
    assert last["type"] == "response.failed" and last["response"]["status"] == "failed"
    assert last["response"]["error"]["code"] == "server_error"
    assert [i["type"] for i in last["response"]["output"]] == ["message"]
    stored = await server.post("/v1/responses", {**body, "store": False})
    assert stored.status == 200, stored.text  # not storing still works
