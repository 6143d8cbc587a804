"""Unbounded JSON literals are bounded in every compiled grammar (engine/guided/bounds.py):
at most 19 integer digits, 19 fraction digits and 2 exponent digits, and a string's length,
where the schema gives no bound; the schema's own bounds, patterns and literals are left as
they are."""

from __future__ import annotations

import json
import re

import pytest
import xgrammar as xgr

from engine import LLM, GuidedDecoding, SamplingParams
from engine.guided.bounds import bound_numbers
from tests.conftest import make_tiny_llama

SCHEMA = {
    "type": "object",
    "properties": {
        "i": {"type": "integer"},
        "x": {"type": "number"},
        "low": {"type": "integer", "minimum": 0},  # bounded below only
        "any": {},  # any JSON value
        "code": {"type": "string", "pattern": "^[1-9] [0-9]*$"},
        "tag": {"enum": ["[1-9] [0-9]*"]},
    },
    "required": ["i", "x", "low", "any", "code", "tag"],
}


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> LLM:
    return LLM(str(make_tiny_llama(tmp_path_factory.mktemp("bounds"), "llama31")),
               max_model_len=256)


def accepts(llm: LLM, spec: GuidedDecoding, text: str) -> bool:
    matcher = xgr.GrammarMatcher(llm.llm_engine.core.grammars.compile(spec))
    return matcher.accept_string(text) and matcher.is_completed()


def doc(i: str = "1", x: str = "1.5", low: str = "0", any_: str = "null",
        code: str = "1 23") -> str:
    return (f'{{"i": {i}, "x": {x}, "low": {low}, "any": {any_}, "code": "{code}", '
            f'"tag": "[1-9] [0-9]*"}}')


@pytest.mark.parametrize(("fields", "ok"), [
    ({"i": "9" * 19}, True), ({"i": "9" * 20}, False),
    ({"i": "-" + "9" * 19}, True), ({"i": "-" + "9" * 20}, False),
    ({"x": "1" * 19 + "." + "2" * 19}, True), ({"x": "1" * 20}, False),
    ({"x": "1." + "2" * 20}, False),
    ({"x": "1e-99"}, True), ({"x": "1E+100"}, False),
    ({"low": "1" * 19}, True), ({"low": "1" * 20}, False),
    ({"any_": "[1, " + "3" * 19 + ", {\"k\": 1.5e10}]"}, True),
    ({"any_": "[" + "3" * 20 + "]"}, False),
    ({"code": "1 " + "2" * 40}, True),  # a pattern keeps its own meaning
])
def test_schema_number_bounds(llm: LLM, fields: dict[str, str], ok: bool) -> None:
    assert accepts(llm, GuidedDecoding(json_schema=SCHEMA), doc(**fields)) is ok


def test_schema_bounds_and_json_object_and_structural_tags(llm: LLM) -> None:
    ranged = GuidedDecoding(json_schema={"type": "integer", "minimum": -5, "maximum": 500})
    assert accepts(llm, ranged, "500") and not accepts(llm, ranged, "501")
    obj = GuidedDecoding(json_object=True)
    assert accepts(llm, obj, '{"a": ' + "7" * 19 + "}")
    assert not accepts(llm, obj, '{"a": ' + "7" * 20 + "}")
    tag = GuidedDecoding(structural_tag={"type": "structural_tag", "format": {
        "type": "tag", "begin": "<n>", "end": "</n>",
        "content": {"type": "json_schema", "json_schema": {"type": "integer"}}}})
    assert accepts(llm, tag, "<n>" + "4" * 19 + "</n>")
    assert not accepts(llm, tag, "<n>" + "4" * 20 + "</n>")


def test_rewrite_leaves_literals_and_classes_alone() -> None:
    ebnf = ('root ::= (("[1-9] [0-9]*" [1-9] [0-9]*) | ([\\"] d{1, -1}))\n'
            "d ::= (([0-9]))\n")
    assert bound_numbers(ebnf) == ('root ::= (("[1-9] [0-9]*" [1-9] [0-9]{0, 18}) | '
                                   '([\\"] d{1, 19}))\nd ::= (([0-9]))\n')


def test_a_model_that_only_wants_digits_still_ends(llm: LLM) -> None:
    """The '1111...' failure: a model that prefers the digit 1 above all (here by logit_bias)
    writes a 19-digit integer and the grammar ends the object, long before max_tokens."""
    one = llm.tokenizer.encode("1", add_special_tokens=False)
    assert len(one) == 1
    schema = {"type": "object", "properties": {"population": {"type": "integer"},
                                               "area": {"type": "number"}},
              "required": ["population", "area"]}
    out = llm.generate("x", SamplingParams(
        max_tokens=200, temperature=0, logit_bias={one[0]: 100.0},
        guided=GuidedDecoding(json_schema=schema)))[0].outputs[0]
    assert out.finish_reason == "stop", out.text
    assert json.loads(out.text)["population"] == int("1" * 19)
    area = re.fullmatch(r'\{"population": 1{19}, "area": (.*)\}', out.text)
    assert area is not None and re.fullmatch(r"1{19}(\.1{1,19})?([eE][+-]?1{1,2})?",
                                             area.group(1)), out.text


# ---- strings ----------------------------------------------------------------------------

STRINGS = {"type": "object", "properties": {
    "s": {"type": "string"},
    "short": {"type": "string", "maxLength": 20},  # the schema's own bound (pattern rewrite)
    "code": {"type": "string", "pattern": "^[a-z]+$"},
    "kind": {"enum": ["x" * 30]},
}, "required": ["s", "short", "code", "kind"]}


@pytest.fixture
def small_strings(llm: LLM):
    backend = llm.llm_engine.core.grammars
    before = backend.max_string_chars
    backend.max_string_chars = 12  # for grammars compiled in this test
    yield llm
    backend.max_string_chars = before


def strings_doc(s: str, short: str = "ok", code: str = "abc") -> str:
    """The document with `s` written as the JSON text of the string's body."""
    kind = "x" * 30
    return f'{{"s": "{s}", "short": "{short}", "code": "{code}", "kind": "{kind}"}}'


@pytest.mark.parametrize(("s", "ok"), [
    ("a" * 12, True), ("a" * 13, False), ("", True),
    ("é東🙂 and ü", True),  # characters, not bytes, count
    ('a\\"b\\n\\\\', True),  # escapes, counted as written: 8 characters
    ("\\u00e9" * 2, True), ("\\u00e9" * 3, False),
])
def test_unbounded_strings_get_the_default_bound(small_strings: LLM, s: str, ok: bool) -> None:
    spec = GuidedDecoding(json_schema=STRINGS)
    assert accepts(small_strings, spec, strings_doc(s)) is ok
    # the schema's own bounds and literals are unchanged
    assert accepts(small_strings, spec, strings_doc("a", short="b" * 20, code="z" * 40))
    assert not accepts(small_strings, spec, strings_doc("a", short="b" * 21))


def test_bounded_strings_stay_json_strings(small_strings: LLM) -> None:
    spec = GuidedDecoding(json_schema=STRINGS)
    for bad in ('a"b', "a\nb", "a\tb", "a\\qb", "a\\u12"):  # raw quote / controls, bad escapes
        assert not accepts(small_strings, spec, strings_doc(bad)), bad
    obj = GuidedDecoding(json_object=True)  # keys and values of any object
    k12, k13, v12, v13 = "k" * 12, "k" * 13, "v" * 12, "v" * 13
    assert accepts(small_strings, obj, f'{{"{k12}": "{v12}"}}')
    assert not accepts(small_strings, obj, f'{{"{k13}": 1}}')
    assert not accepts(small_strings, obj, f'{{"k": ["{v13}"]}}')


def test_a_model_that_never_closes_its_strings_still_ends(small_strings: LLM) -> None:
    """EOS banned and unbounded strings: only the bounds can end these."""
    eos = small_strings.llm_engine.core.eos_token_ids
    schema = {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "array", "items": {"type": "string"},
                                       "maxItems": 3}}, "required": ["a", "b"]}
    for seed in range(4):
        out = small_strings.generate("x", SamplingParams(
            max_tokens=200, seed=seed, logit_bias={e: -100.0 for e in eos},
            guided=GuidedDecoding(json_schema=schema)))[0].outputs[0]
        assert out.finish_reason == "stop", out.text
        assert len(out.token_ids) < 120
        assert set(json.loads(out.text)) == {"a", "b"}
