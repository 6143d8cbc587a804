"""GuidedDecoding(stop_on_repeat=MARKER): the output ends as soon as the JSON object after a
marker repeats one written before (engine/guided/repeat_guard.py)."""

from __future__ import annotations

import json

import pytest

from engine import LLM, GuidedDecoding, SamplingParams
from engine.guided.repeat_guard import RepeatGuard
from tests.conftest import make_tiny_llama


def feed_all(guard: RepeatGuard, text: str, step: int = 3) -> int | None:
    """Feed `text` in byte pieces; the end offset of the piece that tripped the guard."""
    data = text.encode()
    for i in range(0, len(data), step):
        if guard.feed(data[i:i + step]):
            return i + step
    return None


def test_the_same_object_again_trips_it_even_spaced_and_ordered_differently() -> None:
    first = '<c>{"name": "f", "arguments": {"a": 1, "b": [2]}}</c>\n'
    second = '<c>{"name": "f", "arguments": {"a": 2, "b": [2]}}</c>\n'
    again = '<c>{"arguments":{"b":[2],"a":1},  "name":"f"}'
    guard = RepeatGuard("<c>")
    assert feed_all(guard, first + second) is None
    assert not guard.repeated
    text = first + second + again
    guard = RepeatGuard("<c>")
    assert feed_all(guard, text, step=1) == len(text.encode())  # right at its closing brace


def test_nested_objects_and_braces_in_strings_are_not_calls() -> None:
    # The marker spelled inside an argument, braces in strings: one object per marker only.
    text = ('{"name": "f", "parameters": {"who": {"name": "x"}, "s": "}{"}}; '
            '{"name": "f", "parameters": {"who": {"name": "y"}, "s": "}{"}}')
    assert feed_all(RepeatGuard('{"name": '), text) is None


def test_multibyte_characters_split_across_tokens() -> None:
    call = '<c>{"city": "Zürich 東京"}'
    assert feed_all(RepeatGuard("<c>"), call + " " + call, step=1) is not None
    assert feed_all(RepeatGuard("<c>"), call + '<c>{"city": "Zurich"}', step=1) is None


def test_spec_validation_and_identity() -> None:
    with pytest.raises(ValueError, match="^guided.stop_on_repeat"):
        GuidedDecoding(json_object=True, stop_on_repeat="")
    a = GuidedDecoding(json_object=True, stop_on_repeat="<c>")
    assert a != GuidedDecoding(json_object=True) and a.key == GuidedDecoding(json_object=True).key


CALL = {"type": "tag", "begin": "<c>", "end": "</c>",
        "content": {"type": "json_schema", "json_schema": {
            "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
            "required": ["zone"]}}}
CALLS = {"type": "structural_tag", "format": {
    "type": "tags_with_separator", "tags": [CALL], "separator": "\n", "at_least_one": True}}


def test_a_model_that_never_stops_calling_is_ended_by_its_first_repeat(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """EOS banned: the call-list grammar alone would run to max_tokens. Only two distinct
    calls exist, so the third at the latest repeats one and ends the output."""
    llm = LLM(str(make_tiny_llama(tmp_path_factory.mktemp("guard"), "llama31")),
              max_model_len=256)
    eos = llm.llm_engine.core.eos_token_ids
    for seed in range(3):
        out = llm.generate("x", SamplingParams(
            max_tokens=200, seed=seed, logit_bias={e: -100.0 for e in eos},
            guided=GuidedDecoding(structural_tag=CALLS, stop_on_repeat="<c>")))[0].outputs[0]
        assert out.finish_reason == "stop", out.text
        # The repeat is written out whole: the token that closed it is text, not a stop token.
        last = json.loads(out.text.rsplit("<c>", 1)[1])
        zones = [part.split('"')[3] for part in out.text.split("<c>")[1:]]
        assert last == {"zone": zones[-1]}
        assert 2 <= len(zones) <= 3 and zones[-1] in zones[:-1], out.text
        assert len(set(zones[:-1])) == len(zones) - 1
