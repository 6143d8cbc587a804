"""GuidedDecoding and its place in SamplingParams: validation, no model needed."""

from __future__ import annotations

import re

import pytest

from engine import GuidedDecoding, SamplingParams
from engine.guided.schema_fix import fix_schema

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def test_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="^guided must set exactly one"):
        GuidedDecoding()
    with pytest.raises(ValueError, match="^guided must set exactly one"):
        GuidedDecoding(json_object=True, json_schema=SCHEMA)
    assert GuidedDecoding(json_schema=SCHEMA).kind == "json_schema"
    assert GuidedDecoding(json_object=True).kind == "json_object"
    assert GuidedDecoding(structural_tag={"type": "structural_tag"}).kind == "structural_tag"


@pytest.mark.parametrize("kwargs", [
    {"json_schema": "not a dict"}, {"structural_tag": [1]}, {"json_object": 1},
    {"json_schema": {"x": float("nan")}}, {"json_schema": {"x": object()}},
])
def test_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="^guided"):
        GuidedDecoding(**kwargs)


def test_equal_specs_share_a_key() -> None:
    a = GuidedDecoding(json_schema={"type": "object", "required": ["x"]})
    b = GuidedDecoding(json_schema={"required": ["x"], "type": "object"})
    assert a == b and hash(a) == hash(b) and a.key == b.key
    assert a != GuidedDecoding(json_object=True)


def test_sampling_params_field() -> None:
    p = SamplingParams(guided={"json_schema": SCHEMA})  # the dict shorthand
    assert p.guided == GuidedDecoding(json_schema=SCHEMA)
    assert SamplingParams().guided is None
    with pytest.raises(ValueError, match="^guided"):
        SamplingParams(guided="json")
    with pytest.raises(ValueError, match="^guided has an unknown field"):
        SamplingParams(guided={"regex": "a+"})


@pytest.mark.parametrize("field", ["min_tokens", "ignore_eos"])
def test_conflicts_with_end_control(field: str) -> None:
    value = 3 if field == "min_tokens" else True
    with pytest.raises(ValueError, match=f"^{field} cannot be combined with guided"):
        SamplingParams(guided=GuidedDecoding(json_object=True), **{field: value})


def test_bounded_strings_become_patterns() -> None:
    schema = {"type": "object", "properties": {
        "s": {"type": "string", "maxLength": 5},
        "t": {"type": "string", "minLength": 2, "pattern": "^a+$"},  # already a pattern
        "e": {"enum": [{"type": "string", "maxLength": 1}]},  # data, not a schema
    }}
    fixed = fix_schema(schema)
    s = fixed["properties"]["s"]
    assert "maxLength" not in s and s["type"] == "string"
    pattern = re.compile(s["pattern"])
    assert pattern.match("h [x]") and pattern.match("")
    for bad in ("toolong", "a\x0bb", 'a"b', "a\\b", "é"):
        assert not pattern.match(bad), bad
    assert fixed["properties"]["t"] == schema["properties"]["t"]
    assert fixed["properties"]["e"] == schema["properties"]["e"]
    assert schema["properties"]["s"] == {"type": "string", "maxLength": 5}  # input untouched
