"""Random weights + grammar: every output is valid, because the grammar alone makes it so.

A random model writes valid JSON by chance essentially never (checked below as a control),
so each passing output here is the masks' work. Schemas bound their strings, numbers and
arrays so that a random walk ends well within max_tokens.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest
import torch

from engine import LLM, GuidedDecoding, SamplingParams
from engine.guided.matcher import GrammarState, apply_grammar_masks
from tests.conftest import make_tiny_llama

NESTED = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "count": {"type": "integer", "minimum": -5, "maximum": 500},
        "ratio": {"type": "number", "minimum": -10, "maximum": 10},
        "mode": {"enum": ["fast", "slow", "off"]},
        "flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
        "point": {
            "type": "object",
            "properties": {"x": {"type": "integer", "minimum": -999, "maximum": 999},
                           "label": {"type": "string", "maxLength": 3},
                           "tags": {"type": "array", "maxItems": 2,
                                    "items": {"type": "string", "enum": ["a", "b"]}}},
            "required": ["x", "label", "tags"],
        },
        "note": {"type": ["string", "null"], "maxLength": 4},
    },
    "required": ["name", "count", "ratio", "mode", "flags", "point"],
}


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> LLM:
    return LLM(str(make_tiny_llama(tmp_path_factory.mktemp("guided"), "llama31")),
               max_model_len=256)


def strict_json(text: str) -> object:
    return json.loads(text)  # strict: raw control characters inside strings fail


def test_without_grammar_random_weights_write_no_json(llm: LLM) -> None:
    outs = llm.generate(["{"] * 4, SamplingParams(max_tokens=40, seed=3))
    for o in outs:
        with pytest.raises(ValueError):
            strict_json("{" + o.outputs[0].text)


def test_nested_schema_is_satisfied_sampled_batched_and_forked(llm: LLM) -> None:
    guided = GuidedDecoding(json_schema=NESTED)
    params = [SamplingParams(max_tokens=200, seed=s, n=2, guided=guided) for s in range(4)]
    outs = llm.generate(["a", "b c", "hello there", "x"], params)
    texts = [c.text for o in outs for c in o.outputs]
    assert len(texts) == 8 and len(set(texts)) > 1  # real variety, not one forced string
    for o in outs:
        for c in o.outputs:
            assert c.finish_reason == "stop", c
            jsonschema.validate(strict_json(c.text), NESTED)


def test_greedy_and_json_object(llm: LLM) -> None:
    schema_out = llm.generate("q", SamplingParams(temperature=0, max_tokens=200,
                                                  guided=GuidedDecoding(json_schema=NESTED)))
    jsonschema.validate(strict_json(schema_out[0].outputs[0].text), NESTED)
    outs = llm.generate(["p", "q"], SamplingParams(max_tokens=200, seed=7,
                                                   guided=GuidedDecoding(json_object=True)))
    for o in outs:
        if o.outputs[0].finish_reason == "stop":
            assert isinstance(strict_json(o.outputs[0].text), dict)
        else:  # cut by max_tokens: still a prefix of an object
            assert o.outputs[0].text.startswith("{")


def test_guided_and_free_rows_share_a_batch(llm: LLM) -> None:
    free = SamplingParams(max_tokens=12, temperature=0)
    alone = llm.generate("hi", free)[0].outputs[0].token_ids
    mixed = llm.generate(["hi", "hi"], [free, SamplingParams(
        max_tokens=200, temperature=0, guided=GuidedDecoding(json_schema=NESTED))])
    assert mixed[0].outputs[0].token_ids == alone  # the free row is untouched
    jsonschema.validate(strict_json(mixed[1].outputs[0].text), NESTED)


def test_max_tokens_cuts_with_length(llm: LLM) -> None:
    out = llm.generate("a", SamplingParams(max_tokens=5, seed=0,
                                           guided=GuidedDecoding(json_schema=NESTED)))[0]
    assert out.outputs[0].finish_reason == "length"
    assert len(out.outputs[0].token_ids) == 5


def test_preempted_sequences_stay_valid(tmp_path: Path) -> None:
    path = make_tiny_llama(tmp_path / "m", "llama31")
    # Room for 192 tokens (the context is capped to that): four guided sequences cannot all
    # stay resident.
    llm = LLM(str(path), kv_cache_bytes=12 * 16 * 384)
    guided = GuidedDecoding(json_schema=NESTED)
    outs = llm.generate(["a b", "c d", "e f", "g h"],
                        SamplingParams(max_tokens=200, seed=5, guided=guided))
    assert llm.llm_engine.core.scheduler.num_preemptions > 0
    for o in outs:
        jsonschema.validate(strict_json(o.outputs[0].text), NESTED)


def test_structural_tag_allows_text_then_a_constrained_call(llm: LLM) -> None:
    args = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    tag = {"type": "structural_tag", "format": {
        "type": "triggered_tags", "triggers": ["<tool_call>"], "at_least_one": True,
        "stop_after_first": True,
        "tags": [{"type": "tag", "begin": "<tool_call>", "end": "</tool_call>",
                  "content": {"type": "json_schema", "json_schema": args}}]}}
    outs = llm.generate(["a", "b"], SamplingParams(
        max_tokens=200, seed=2, guided=GuidedDecoding(structural_tag=tag)))
    for o in outs:
        text = o.outputs[0].text
        assert o.outputs[0].finish_reason == "stop", text
        body = text.split("<tool_call>", 1)[1]
        assert body.endswith("</tool_call>")
        jsonschema.validate(strict_json(body[: -len("</tool_call>")]), args)


def test_invalid_schema_is_a_value_error(llm: LLM) -> None:
    with pytest.raises(ValueError, match="^guided.json_schema cannot be compiled") as err:
        llm.generate("a", SamplingParams(guided=GuidedDecoding(json_schema={"type": "bogus"})))
    assert "bogus" in str(err.value) and ".cc:" not in str(err.value)  # no C++ locations
    assert not llm.llm_engine.core.has_unfinished()


def test_compiled_grammars_are_cached(llm: LLM) -> None:
    backend = llm.llm_engine.core.grammars
    first = backend.compile(GuidedDecoding(json_schema={"type": "object", "required": []}))
    again = backend.compile(GuidedDecoding(json_schema={"required": [], "type": "object"}))
    assert first is again


def slow_spec(tag: str) -> GuidedDecoding:
    """A schema that takes a second or more to compile for the tiny vocabulary."""
    values = [f"{tag}{i}" for i in range(12_000)]
    return GuidedDecoding(json_schema={"type": "object", "required": ["v"], "properties": {
        "v": {"type": "string", "enum": values}}})


def test_a_compile_does_not_hold_up_cached_grammars(llm: LLM) -> None:
    """The lock guards the cache, not a compile: a cached grammar is served at once while
    a slow schema compiles in another thread."""
    backend = llm.llm_engine.core.grammars
    cached = GuidedDecoding(json_schema={"type": "object", "required": ["a"],
                                         "properties": {"a": {"type": "integer"}}})
    backend.compile(cached)
    spec = slow_spec("held-")
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(backend.compile, spec)
        while not backend._compiling:  # the slow compile has begun
            assert not slow.done()
            time.sleep(0.001)
        assert backend.compile(cached) is not None and backend.is_cached(cached)
        assert not slow.done() and not backend.is_cached(spec)
        slow.result()
    assert backend.is_cached(spec)


def test_one_compile_per_schema_however_many_ask(llm: LLM,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    backend = llm.llm_engine.core.grammars
    calls = []
    real = backend._compile

    def counting(spec: GuidedDecoding) -> object:
        calls.append(spec.key)
        return real(spec)

    monkeypatch.setattr(backend, "_compile", counting)
    spec = slow_spec("shared-")
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: backend.compile(spec), range(3)))
    assert len(calls) == 1 and all(r is results[0] for r in results)
    bad = GuidedDecoding(json_schema={"type": "bogus"})
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(backend.compile, bad) for _ in range(2)]
        for f in futures:
            with pytest.raises(ValueError, match="bogus"):
                f.result()
    assert not backend._compiling  # a failed compile leaves nothing behind


def test_masks_leave_free_rows_alone(llm: LLM) -> None:
    compiled = llm.llm_engine.core.grammars.compile(GuidedDecoding(json_object=True))
    logits = torch.randn(3, llm.model_config.vocab_size)
    before = logits.clone()
    apply_grammar_masks(logits, [None, GrammarState(compiled), None])
    assert torch.equal(logits[0], before[0]) and torch.equal(logits[2], before[2])
    allowed = torch.isfinite(logits[1]).nonzero().flatten().tolist()
    brace = llm.tokenizer.encode("{", add_special_tokens=False)
    assert allowed == brace  # an object must open with "{"
