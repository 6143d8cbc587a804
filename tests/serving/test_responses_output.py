"""Output items and their stream events, without a model: whatever pieces the text comes in,
the items are the same, and every event is legal where it stands (the SDK's stream
accumulator and its types take them)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent

from serving.responses_api.output import OutputBuilder
from serving.tools import plan_tools, tool_request

STREAM_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
ARGS = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
TOOLS = [{"type": "function", "function": {"name": "search", "parameters": ARGS}},
         {"type": "function", "function": {"name": "noop"}}]
CALL_1 = '<tool_call>\n{"name": "search", "arguments": {"q": "a}b"}}\n</tool_call>'
CALL_2 = '<tool_call>\n{"name": "noop", "arguments": {}}\n</tool_call>'
# Prose before, between and after calls (the grammar allows it in `auto`).
TEXT = f"Let me look.\n{CALL_1}\nand\n{CALL_2}\nDone."


def builder(tools: bool = True) -> OutputBuilder:
    plan = plan_tools(tool_request(TOOLS, "auto", None, None, True), None) if tools else None
    return OutputBuilder(plan)


def run(b: OutputBuilder, pieces: list[str], status: str = "completed") -> list[dict[str, Any]]:
    events = []
    for i, piece in enumerate(pieces):
        events += b.feed(piece, final=i == len(pieces) - 1)
    return events + b.finish(status)


def check_events(events: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """Items open before their content and close once; deltas rebuild the final items."""
    opened: dict[int, str] = {}
    closed: set[int] = set()
    text: dict[int, str] = {}
    args: dict[int, str] = {}
    for number, event in enumerate(events):
        STREAM_EVENT.validate_python({**event, "sequence_number": number})
        kind, at = event["type"], event.get("output_index")
        if kind == "response.output_item.added":
            assert at == len(opened) and at not in opened
            opened[at] = event["item"]["id"]
            continue
        assert at in opened and at not in closed, (kind, at)
        if "item_id" in event:
            assert event["item_id"] == opened[at]
        if kind == "response.output_text.delta":
            text[at] = text.get(at, "") + event["delta"]
        elif kind == "response.function_call_arguments.delta":
            args[at] = args.get(at, "") + event["delta"]
        elif kind == "response.output_item.done":
            assert event["item"] == items[at]
            closed.add(at)
    assert closed == set(opened) == set(range(len(items)))
    for at, item in enumerate(items):
        if item["type"] == "message":
            assert item["content"][0]["text"] == text.get(at, "")
        else:
            assert item["arguments"] == args.get(at, "")


def shape(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [("message", i["content"][0]["text"].strip()) if i["type"] == "message" else
            (i["name"], i["arguments"]) for i in items]


def pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1000, 1, 2, 5, 17])
def test_items_do_not_depend_on_how_the_text_arrives(size: int) -> None:
    """Prose, then calls (the format the tool prompt asks for)."""
    text = f"Let me look.\n{CALL_1}\n{CALL_2}"
    b = builder()
    events = run(b, pieces(text, size))
    check_events(events, b.items)
    assert shape(b.items) == [("message", "Let me look."), ("search", '{"q": "a}b"}'),
                              ("noop", "{}")]
    assert all(i["status"] == "completed" for i in b.items)


@pytest.mark.parametrize("size", [1000, 1, 2, 5, 17])
def test_prose_between_calls(size: int) -> None:
    """Token by token (the engine's deltas), prose after a call is a new message after it;
    text that arrives in one piece puts the prose first. Events stay legal either way."""
    b = builder()
    events = run(b, pieces(TEXT, size))
    check_events(events, b.items)
    calls = [i for i in shape(b.items) if i[0] != "message"]
    assert calls == [("search", '{"q": "a}b"}'), ("noop", "{}")]
    prose = [i[1] for i in shape(b.items) if i[0] == "message"]
    if size == 1:
        assert shape(b.items)[1::2] == calls and prose == ["Let me look.", "and", "Done."]
    else:
        assert "".join(prose).replace("\n", "") == "Let me look.andDone."


def test_plain_text_is_one_message_verbatim() -> None:
    b = builder(tools=False)
    events = run(b, [" Hel", "lo\n", ""], status="incomplete")
    check_events(events, b.items)
    [item] = b.items
    assert item["content"][0]["text"] == " Hello\n" and item["status"] == "incomplete"


def test_nothing_generated_is_an_empty_message() -> None:
    b = builder()
    events = run(b, [""])
    check_events(events, b.items)
    assert [(i["type"], i["content"][0]["text"]) for i in b.items] == [("message", "")]


def test_a_cut_call_is_incomplete() -> None:
    b = builder()
    events = run(b, [CALL_1[:-20]], status="incomplete")
    check_events(events, b.items)
    [item] = b.items
    assert item["type"] == "function_call" and item["status"] == "incomplete"
    assert item["name"] == "search"
