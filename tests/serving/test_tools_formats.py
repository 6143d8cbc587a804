"""The call formats without a model: grammars compile against a real vocabulary and accept
exactly the format the parsers read; parsers and their streaming agree."""

from __future__ import annotations

import json

import pytest
import xgrammar as xgr

from serving.tools.definitions import tool_request
from serving.tools.formats import HermesFormat, Llama3JsonFormat, ToolCallFormat
from serving.tools.results import ToolStreamer, parse_message

ARGS = {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["q", "n"]}
TOOLS = [{"type": "function", "function": {"name": "search", "parameters": ARGS}},
         {"type": "function", "function": {"name": "noop"}}]

HERMES_TEXT = ('Sure.\n<tool_call>\n{"name": "search", "arguments": {"q": "a}b", "n": 2}}\n'
               '</tool_call>\n<tool_call>\n{"name": "noop", "arguments": {}}\n</tool_call>')
LLAMA_TEXT = '{"name": "search", "parameters": {"q": "x", "n": 10}}; {"name": "noop", ' \
             '"parameters": {}}'
CASES = [(HermesFormat(), HERMES_TEXT, "Sure."), (Llama3JsonFormat(), LLAMA_TEXT, None)]


def _grammar_accepts(fmt: ToolCallFormat, choice: object, text: str) -> bool:
    tools = tool_request(TOOLS, choice, None, None, True)
    info = xgr.TokenizerInfo([bytes([b]) for b in range(256)] + [b""], stop_token_ids=[256])
    compiled = xgr.GrammarCompiler(info).compile_structural_tag(fmt.structural_tag(tools))
    matcher = xgr.GrammarMatcher(compiled)
    return matcher.accept_string(text) and matcher.is_completed()


@pytest.mark.parametrize(("fmt", "text", "content"), CASES)
def test_parse_reads_every_call_verbatim(fmt: ToolCallFormat, text: str,
                                         content: str | None) -> None:
    tools = tool_request(TOOLS, "auto", None, None, True)
    parsed = parse_message(fmt, tools, text)
    assert parsed.content == content
    names = [c["function"]["name"] for c in parsed.tool_calls]
    assert names == ["search", "noop"]
    first = json.loads(parsed.tool_calls[0]["function"]["arguments"])
    assert first["q"] in ("a}b", "x")
    assert json.loads(parsed.tool_calls[1]["function"]["arguments"]) == {}


@pytest.mark.parametrize(("fmt", "text", "content"), CASES)
def test_streaming_char_by_char_matches_the_whole(fmt: ToolCallFormat, text: str,
                                                  content: str | None) -> None:
    tools = tool_request(TOOLS, "auto", None, None, True)
    streamer = ToolStreamer(fmt, tools)
    deltas = []
    for i, ch in enumerate(text):
        deltas += streamer.feed(ch, final=i == len(text) - 1)
    got_content = "".join(d.get("content", "") for d in deltas) or None
    calls: dict[int, dict] = {}
    for d in deltas:
        assert not ("content" in d and "tool_calls" in d)
        for frag in d.get("tool_calls", []):
            entry = calls.setdefault(frag["index"], {"name": None, "arguments": ""})
            entry["name"] = frag["function"].get("name", entry["name"])
            entry["arguments"] += frag["function"]["arguments"]
    whole = parse_message(fmt, tools, text)
    assert got_content == whole.content == content
    assert [calls[i] for i in sorted(calls)] == [c["function"] for c in whole.tool_calls]


@pytest.mark.parametrize(("fmt", "text"), [(HermesFormat(), HERMES_TEXT.split("\n", 1)[1]),
                                           (Llama3JsonFormat(), LLAMA_TEXT)])
def test_required_grammar_accepts_the_format_the_parser_reads(fmt: ToolCallFormat,
                                                              text: str) -> None:
    assert _grammar_accepts(fmt, "required", text)
    bad = text.replace('"n": ', '"m": ', 1)  # arguments that break the schema
    assert not _grammar_accepts(fmt, "required", bad)


def test_auto_grammar_allows_prose_then_calls() -> None:
    assert _grammar_accepts(HermesFormat(), "auto", HERMES_TEXT)
    assert _grammar_accepts(HermesFormat(), "auto", "Just text, no call.")
    assert not _grammar_accepts(HermesFormat(), "auto", "x<tool_call>\n{\"name\": \"other\"")


def test_legacy_dialect_streams_function_call() -> None:
    tools = tool_request(None, None, [{"name": "search", "parameters": ARGS}], "search", None)
    streamer = ToolStreamer(HermesFormat(), tools)
    text = '<tool_call>\n{"name": "search", "arguments": {"q": "z", "n": 1}}\n</tool_call>'
    deltas = streamer.feed(text[:40], False) + streamer.feed(text[40:], True)
    assert deltas[0] == {"function_call": {"name": "search", "arguments": ""}}
    args = "".join(d["function_call"]["arguments"] for d in deltas[1:])
    assert json.loads(args) == {"q": "z", "n": 1}
