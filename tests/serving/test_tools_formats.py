"""The call formats without a model: grammars compile against a real vocabulary and accept
exactly the format the parsers read; parsers and their streaming agree."""

from __future__ import annotations

import json

import pytest
import xgrammar as xgr

from engine import GuidedDecoding
from serving.tools import ToolPlan
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


def _grammar_accepts(fmt: ToolCallFormat, choice: object, text: str,
                     answer: GuidedDecoding | None = None, max_calls: int = 16,
                     parallel: bool = True) -> bool:
    tools = tool_request(TOOLS, choice, None, None, parallel)
    plan = ToolPlan(tools, fmt, max_calls)
    info = xgr.TokenizerInfo([bytes([b]) for b in range(256)] + [b""], stop_token_ids=[256])
    compiled = xgr.GrammarCompiler(info).compile_structural_tag(plan.structural_tag(answer))
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


# ---- response_format beside tools; bounded call lists ------------------------------------

ANSWER = GuidedDecoding(json_schema={"type": "object", "properties": {"city": {"type": "string"}},
                                     "required": ["city"]})
HERMES_CALL = '<tool_call>\n{"name": "search", "arguments": {"q": "x", "n": %d}}\n</tool_call>'
LLAMA_CALL = '{"name": "search", "parameters": {"q": "x", "n": %d}}'


@pytest.mark.parametrize(("fmt", "call"), [(HermesFormat(), HERMES_CALL),
                                           (Llama3JsonFormat(), LLAMA_CALL)])
def test_auto_with_a_response_format_is_an_answer_or_calls(fmt: ToolCallFormat,
                                                           call: str) -> None:
    calls = (call % 1) + fmt.separator + (call % 2)
    assert _grammar_accepts(fmt, "auto", '{"city": "Paris"}', ANSWER)
    assert _grammar_accepts(fmt, "auto", calls, ANSWER)
    assert not _grammar_accepts(fmt, "auto", '{"town": "Paris"}', ANSWER)  # off-schema
    assert not _grammar_accepts(fmt, "auto", "Paris", ANSWER)  # prose is not the format
    assert not _grammar_accepts(fmt, "auto", '{"city": "Paris"}' + (call % 1), ANSWER)
    # json_object: any object
    assert _grammar_accepts(fmt, "auto", '{"a": [1, 2]}', GuidedDecoding(json_object=True))
    # required and named choices ignore the answer format: calls only
    assert _grammar_accepts(fmt, "required", calls, ANSWER)
    assert not _grammar_accepts(fmt, "required", '{"city": "Paris"}', ANSWER)
    named = {"type": "function", "function": {"name": "search"}}
    assert _grammar_accepts(fmt, named, call % 1, ANSWER)
    assert not _grammar_accepts(fmt, named, '{"city": "Paris"}', ANSWER)


@pytest.mark.parametrize("choice", ["auto", "required"])
@pytest.mark.parametrize(("fmt", "call"), [(HermesFormat(), HERMES_CALL),
                                           (Llama3JsonFormat(), LLAMA_CALL)])
def test_calls_per_message_are_bounded(fmt: ToolCallFormat, call: str, choice: str) -> None:
    def calls(k: int) -> str:
        return fmt.separator.join(call % i for i in range(k))

    assert _grammar_accepts(fmt, choice, calls(3), max_calls=3)
    assert not _grammar_accepts(fmt, choice, calls(4), max_calls=3)
    assert _grammar_accepts(fmt, choice, calls(1), parallel=False)
    assert not _grammar_accepts(fmt, choice, calls(2), parallel=False)


def test_auto_allows_nothing_after_the_calls() -> None:
    call = HERMES_CALL % 1
    assert _grammar_accepts(HermesFormat(), "auto", "Let me look.\n" + call)
    assert not _grammar_accepts(HermesFormat(), "auto", call + "\nDone.")


@pytest.mark.parametrize(("fmt", "call"), [(HermesFormat(), HERMES_CALL),
                                           (Llama3JsonFormat(), LLAMA_CALL)])
def test_a_repeated_call_ends_the_list_whole_and_streamed(fmt: ToolCallFormat,
                                                          call: str) -> None:
    tools = tool_request(TOOLS, "required", None, None, True)
    # The same arguments, spaced and ordered differently, are the same call.
    again = call.replace('{"q": "x", "n": %d}', '{"n": %d,  "q":"x"}')
    text = fmt.separator.join([call % 1, call % 2, again % 1, call % 3])
    whole = parse_message(fmt, tools, text)
    assert [json.loads(c["function"]["arguments"])["n"] for c in whole.tool_calls] == [1, 2]
    streamer = ToolStreamer(fmt, tools)
    deltas = []
    for i, ch in enumerate(text):
        deltas += streamer.feed(ch, final=i == len(text) - 1)
    heads = [f for d in deltas for f in d.get("tool_calls", []) if "id" in f]
    assert [f["index"] for f in heads] == [0, 1]  # the repeat's header was never sent
    args = {0: "", 1: ""}
    for d in deltas:
        for f in d.get("tool_calls", []):
            args[f["index"]] += f["function"]["arguments"]
    assert [args[0], args[1]] == [c["function"]["arguments"] for c in whole.tool_calls]


def test_a_llama3_json_answer_that_looks_like_a_call_is_content() -> None:
    tools = tool_request(TOOLS, "auto", None, None, True)
    answer = '{"name": "Paris", "population": 2}'
    parsed = parse_message(Llama3JsonFormat(), tools, answer)
    assert parsed.content == answer and parsed.tool_calls is None
    streamer = ToolStreamer(Llama3JsonFormat(), tools)
    deltas = streamer.feed(answer[:20], False) + streamer.feed(answer[20:], True)
    assert "".join(d.get("content", "") for d in deltas) == answer
