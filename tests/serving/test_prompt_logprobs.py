"""/v1/completions with echo and logprobs: the prompt tokens' logprobs (first null), then
the generated ones; max_tokens 0 with echo returns the prompt alone (what evaluation
harnesses such as lm-evaluation-harness's local-completions send). Expected values come
from the offline engine on the same checkpoint (its prompt logprobs are checked against
transformers in tests/engine/test_prompt_logprobs.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.serving.conftest import Api, Reference, assert_usage
from tests.serving.test_streaming import COMPLETIONS, per_choice

PROMPT = "The capital of France is"


def check_prompt_part(lp: dict[str, Any], ref: Reference, prompt: str | list[int], k: int
                      ) -> int:
    """The first len(prompt) entries are the prompt's; returns that length."""
    want = ref.generate(prompt, temperature=0, max_tokens=1, prompt_logprobs=k)
    ids = want.prompt_token_ids
    n = len(ids)
    assert lp["tokens"][:n] == [ref.tokenizer.decode([i]) for i in ids]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["text_offset"][0] == 0
    for got, top, entry in zip(lp["token_logprobs"][1:n], lp["top_logprobs"][1:n],
                               want.prompt_logprobs[1:], strict=True):
        assert got == pytest.approx(entry.chosen.logprob, abs=1e-5)
        expected_top = {t.token: t.logprob for t in entry.top}
        expected_top.setdefault(entry.chosen.token, entry.chosen.logprob)
        assert top == pytest.approx(expected_top, abs=1e-5)
    steps = [b - a for a, b in zip(lp["text_offset"][:n], lp["text_offset"][1:n])]
    assert steps == [len(t) for t in lp["tokens"][: n - 1]]
    return n


async def test_echo_with_logprobs_gives_prompt_then_generated(api: Api, ref: Reference) -> None:
    resp = await api.completion(prompt=PROMPT, temperature=0, max_tokens=3, echo=True,
                                logprobs=2)
    assert resp.status == 200, resp.text
    choice = resp.json["choices"][0]
    lp = choice["logprobs"]
    n = check_prompt_part(lp, ref, PROMPT, 2)
    gen = ref.generate(PROMPT, temperature=0, max_tokens=3, logprobs=2).outputs[0]
    assert choice["text"] == PROMPT + gen.text
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == n + 3
    assert lp["token_logprobs"][n:] == pytest.approx([p.chosen.logprob for p in gen.logprobs],
                                                     abs=1e-5)
    assert lp["text_offset"][n] == len(PROMPT)  # the generated text starts after the echo
    assert_usage(resp.json["usage"], n, 3)


@pytest.mark.parametrize("prompt_kind", ["text", "token ids"])
async def test_max_tokens_0_with_echo_returns_the_prompt_only(api: Api, ref: Reference,
                                                              prompt_kind: str) -> None:
    prompt: str | list[int] = PROMPT
    if prompt_kind == "token ids":  # as lm-evaluation-harness sends them
        prompt = ref.tokenizer.encode(PROMPT)
    resp = await api.completion(prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    assert resp.status == 200, resp.text
    choice = resp.json["choices"][0]
    text = PROMPT if isinstance(prompt, str) else ref.tokenizer.decode(prompt)
    assert choice["text"] == text
    assert choice["finish_reason"] == "length"
    n = check_prompt_part(choice["logprobs"], ref, prompt, 1)
    assert len(choice["logprobs"]["tokens"]) == n
    assert_usage(resp.json["usage"], n, 0)


async def test_max_tokens_0_needs_echo_and_echo_alone_has_no_logprobs(api: Api) -> None:
    resp = await api.completion(prompt=PROMPT, max_tokens=0)
    assert resp.status == 400 and resp.json["error"]["param"] == "max_tokens"
    resp = await api.completion(prompt=PROMPT, max_tokens=0, echo=True)
    assert resp.status == 200, resp.text
    assert resp.json["choices"][0]["text"] == PROMPT
    assert resp.json["choices"][0]["logprobs"] is None


async def test_stream_carries_the_prompt_logprobs_in_the_first_chunk(api: Api,
                                                                     ref: Reference) -> None:
    body = {"prompt": PROMPT, "temperature": 0, "max_tokens": 3, "echo": True, "logprobs": 2}
    stream = await api.stream(COMPLETIONS, body)
    assert stream.status == 200, stream.text
    chunks = per_choice(stream.events)[0]
    first = chunks[0]["logprobs"]
    n = check_prompt_part(first, ref, PROMPT, 2)
    assert chunks[0]["text"].startswith(PROMPT)
    whole = (await api.completion(**body)).json["choices"][0]
    joined = {k: [v for c in chunks if c["logprobs"] for v in c["logprobs"][k]]
              for k in ("tokens", "token_logprobs", "text_offset")}
    assert joined == {k: whole["logprobs"][k] for k in joined}
    assert len(joined["tokens"]) == n + 3
    assert "".join(c["text"] for c in chunks) == whole["text"]


async def test_stream_with_max_tokens_0_is_one_chunk_of_prompt(api: Api, ref: Reference) -> None:
    stream = await api.stream(COMPLETIONS, {"prompt": PROMPT, "max_tokens": 0, "echo": True,
                                            "logprobs": 0, "stream_options":
                                            {"include_usage": True}})
    assert stream.status == 200, stream.text
    chunks = per_choice(stream.events)[0]
    assert len(chunks) == 1
    assert chunks[0]["text"] == PROMPT and chunks[0]["finish_reason"] == "length"
    n = check_prompt_part(chunks[0]["logprobs"], ref, PROMPT, 0)
    assert len(chunks[0]["logprobs"]["tokens"]) == n
    assert stream.events[-1]["usage"]["completion_tokens"] == 0
