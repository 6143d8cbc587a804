"""POST /v1/completions in-process: prompt forms, echo, logprobs, parameters, errors.

Expected texts come from the offline engine on the same tiny checkpoint, never from the
server.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.serving.conftest import (
    EOS_ID,
    MAX_LEN,
    MODEL,
    Api,
    Reference,
    assert_created_now,
    assert_error,
    assert_usage,
)

PROMPT = "The capital of France is"


async def test_greedy_completion_matches_offline_engine(api: Api, ref: Reference) -> None:
    resp = await api.completion(prompt=PROMPT, temperature=0, max_tokens=6)
    assert resp.status == 200, resp.text
    body = resp.json
    expected = ref.generate(PROMPT, temperature=0, max_tokens=6)
    assert isinstance(body["id"], str) and body["id"]
    assert body["object"] == "text_completion"
    assert_created_now(body["created"])
    assert body["model"] == MODEL
    assert len(body["choices"]) == 1
    choice = body["choices"][0]
    assert choice["index"] == 0
    assert choice["text"] == expected.outputs[0].text
    assert choice["finish_reason"] == "length"
    assert choice.get("logprobs") is None
    assert_usage(body["usage"], len(ref.tokenizer.encode(PROMPT)), 6)


async def test_api_docs_example_request(api: Api, ref: Reference) -> None:
    """lambda-chat-completions-api.md's body (no max_tokens: OpenAI's default of 16)."""
    resp = await api.post("/v1/completions",
                          {"model": MODEL, "prompt": "Computers are", "temperature": 0})
    assert resp.status == 200, resp.text
    expected = ref.generate("Computers are", temperature=0, max_tokens=16).outputs[0]
    choice = resp.json["choices"][0]
    assert choice["index"] == 0
    assert choice["text"] == expected.text
    assert choice["finish_reason"] == expected.finish_reason
    assert choice.get("logprobs") is None
    assert_usage(resp.json["usage"], len(ref.tokenizer.encode("Computers are")),
                 len(expected.token_ids))


async def test_prompt_as_token_ids(api: Api, ref: Reference) -> None:
    ids = ref.tokenizer.encode("Hello world")
    resp = await api.completion(prompt=ids, temperature=0, max_tokens=5)
    assert resp.status == 200, resp.text
    expected = ref.generate(ids, temperature=0, max_tokens=5)
    assert resp.json["choices"][0]["text"] == expected.outputs[0].text
    assert_usage(resp.json["usage"], len(ids), 5)


async def test_prompt_as_list_of_strings(api: Api, ref: Reference) -> None:
    prompts = ["Hello", "The quick brown fox"]
    resp = await api.completion(prompt=prompts, temperature=0, max_tokens=4)
    assert resp.status == 200, resp.text
    choices = resp.json["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    expected = [ref.generate(p, temperature=0, max_tokens=4).outputs[0].text for p in prompts]
    assert [c["text"] for c in choices] == expected
    prompt_tokens = sum(len(ref.tokenizer.encode(p)) for p in prompts)
    assert_usage(resp.json["usage"], prompt_tokens, 8)


async def test_prompt_as_list_of_token_id_lists(api: Api, ref: Reference) -> None:
    prompts = [ref.tokenizer.encode("café"), ref.tokenizer.encode("def f(x):")]
    resp = await api.completion(prompt=prompts, temperature=0, max_tokens=3)
    assert resp.status == 200, resp.text
    expected = [ref.generate(p, temperature=0, max_tokens=3).outputs[0].text for p in prompts]
    assert [c["text"] for c in resp.json["choices"]] == expected
    assert [c["index"] for c in resp.json["choices"]] == [0, 1]
    assert_usage(resp.json["usage"], sum(map(len, prompts)), 6)


async def test_several_prompts_times_n_are_indexed_prompt_major(api: Api, ref: Reference) -> None:
    prompts = ["Hello", "The quick brown fox"]
    resp = await api.completion(prompt=prompts, n=2, temperature=1.0, seed=11, max_tokens=4)
    assert resp.status == 200, resp.text
    choices = sorted(resp.json["choices"], key=lambda c: c["index"])
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    expected = [o.text for p in prompts
                for o in ref.generate(p, n=2, temperature=1.0, seed=11, max_tokens=4).outputs]
    assert [c["text"] for c in choices] == expected


async def test_default_max_tokens_is_16(api: Api, ref: Reference) -> None:
    """OpenAI's completions API defaults max_tokens to 16 (chat has no such default)."""
    assert len(ref.generate(PROMPT, temperature=0, max_tokens=None).outputs[0].token_ids) > 16
    resp = await api.completion(prompt=PROMPT, temperature=0)
    assert resp.status == 200, resp.text
    assert resp.json["usage"]["completion_tokens"] == 16
    assert resp.json["choices"][0]["finish_reason"] == "length"


async def test_echo_prepends_the_prompt(api: Api, ref: Reference) -> None:
    resp = await api.completion(prompt=PROMPT, temperature=0, max_tokens=4, echo=True)
    assert resp.status == 200, resp.text
    expected = ref.generate(PROMPT, temperature=0, max_tokens=4).outputs[0].text
    assert resp.json["choices"][0]["text"] == PROMPT + expected
    assert_usage(resp.json["usage"], len(ref.tokenizer.encode(PROMPT)), 4)


async def test_echo_of_token_ids_prepends_the_decoded_prompt(api: Api, ref: Reference) -> None:
    ids = ref.tokenizer.encode("Hello world")
    resp = await api.completion(prompt=ids, temperature=0, max_tokens=2, echo=True)
    assert resp.status == 200, resp.text
    expected = ref.generate(ids, temperature=0, max_tokens=2).outputs[0].text
    assert resp.json["choices"][0]["text"] == ref.tokenizer.decode(ids) + expected


async def test_echo_with_logprobs_covers_the_prompt(api: Api, ref: Reference) -> None:
    """OpenAI gives the prompt tokens too (the first one with a null logprob); the values
    are checked in test_prompt_logprobs.py."""
    resp = await api.completion(prompt=PROMPT, temperature=0, max_tokens=2, echo=True,
                                logprobs=1)
    assert resp.status == 200, resp.text
    lp = resp.json["choices"][0]["logprobs"]
    n_prompt = len(ref.tokenizer.encode(PROMPT))
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == n_prompt + 2
    assert lp["token_logprobs"][0] is None
    assert all(isinstance(x, float) for x in lp["token_logprobs"][1:])
    assert lp["text_offset"][0] == 0


async def test_logprobs_completions_format(api: Api, ref: Reference) -> None:
    # Biasing four word tokens keeps the text ASCII, so offsets are plain character counts.
    words = ref.word_tokens(4)
    bias = {str(t): 100 for t in words}
    resp = await api.completion(prompt=PROMPT, temperature=0, max_tokens=5, logprobs=3,
                                logit_bias=bias)
    assert resp.status == 200, resp.text
    choice = resp.json["choices"][0]
    expected = ref.generate(PROMPT, temperature=0, max_tokens=5, logprobs=3,
                            logit_bias={t: 100 for t in words}).outputs[0]
    assert choice["text"] == expected.text and expected.text.isascii()
    lp = choice["logprobs"]
    assert set(lp) >= {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert lp["tokens"] == [p.chosen.token for p in expected.logprobs]
    assert "".join(lp["tokens"]) == choice["text"]
    for got, want in zip(lp["token_logprobs"], expected.logprobs, strict=True):
        assert got == pytest.approx(want.chosen.logprob, abs=1e-4)
    # Offsets count characters of the text (from the completion's start, or from the
    # prompt's start as OpenAI's own API does); each token advances them by its length.
    assert lp["text_offset"][0] in (0, len(PROMPT))
    steps = [b - a for a, b in zip(lp["text_offset"], lp["text_offset"][1:])]
    assert steps == [len(t) for t in lp["tokens"][:-1]]
    assert len(lp["top_logprobs"]) == 5
    for top, want in zip(lp["top_logprobs"], expected.logprobs, strict=True):
        # Logprobs are the model's own (before the bias), as the offline engine reports them;
        # the alternatives are the `logprobs` most likely tokens (plus the chosen one).
        assert isinstance(top, dict) and 1 <= len(top) <= 4
        if _distinct(want):
            assert max(top.values()) == pytest.approx(want.top[0].logprob, abs=1e-4)


def _distinct(position: Any) -> bool:
    """Whether the position's alternatives have distinct strings. The completions format keys
    top_logprobs by token string, so tokens that decode alike (two lone UTF-8 continuation
    bytes both print as U+FFFD) collapse into one entry."""
    strings = [t.token for t in position.top] + [position.chosen.token]
    return len(set(strings)) == len({t.token_id for t in position.top} | {position.chosen.token_id})


async def test_logprobs_greedy_chosen_is_the_top_alternative(api: Api, ref: Reference) -> None:
    resp = await api.completion(prompt=PROMPT, temperature=0, max_tokens=6, logprobs=2)
    assert resp.status == 200, resp.text
    lp = resp.json["choices"][0]["logprobs"]
    expected = ref.generate(PROMPT, temperature=0, max_tokens=6, logprobs=2).outputs[0]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 6
    checked = 0
    for token, chosen, top, want in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"],
                                        expected.logprobs, strict=True):
        assert chosen == pytest.approx(want.chosen.logprob, abs=1e-4)
        assert token in top
        if _distinct(want):
            checked += 1
            assert len(top) == 2
            assert top[token] == pytest.approx(chosen)
            assert max(top.values()) == pytest.approx(chosen)
            assert sorted(top.values(), reverse=True) == pytest.approx(
                [t.logprob for t in want.top], abs=1e-4)
    assert checked >= 3


async def test_logprobs_null_when_not_asked(api: Api) -> None:
    resp = await api.completion(prompt=PROMPT, max_tokens=2)
    assert resp.status == 200, resp.text
    assert resp.json["choices"][0].get("logprobs") is None


async def test_stop_string_in_completions(api: Api, ref: Reference) -> None:
    full = ref.generate("Hello", temperature=0, max_tokens=16).outputs[0].text
    # The first ASCII pair after the start, cut there.
    at = next(i for i in range(2, len(full) - 1)
              if full[i:i + 2].isascii() and full[i:i + 2].isprintable()
              and full.find(full[i:i + 2]) == i)
    stop = full[at:at + 2]
    resp = await api.completion(prompt="Hello", temperature=0, max_tokens=16, stop=[stop])
    assert resp.status == 200, resp.text
    choice = resp.json["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == full[:at]


async def test_seed_and_temperature_in_completions(api: Api, ref: Reference) -> None:
    async def sample(seed: int) -> str:
        resp = await api.completion(prompt=PROMPT, temperature=1.0, max_tokens=6, seed=seed)
        assert resp.status == 200, resp.text
        return resp.json["choices"][0]["text"]

    a, b = await sample(5), await sample(5)
    assert a == b == ref.generate(PROMPT, temperature=1.0, max_tokens=6, seed=5).outputs[0].text
    assert await sample(6) == ref.generate(PROMPT, temperature=1.0, max_tokens=6,
                                           seed=6).outputs[0].text


async def test_ignore_eos_and_min_tokens_in_completions(api: Api) -> None:
    bias = {str(EOS_ID): 100}
    stopped = await api.completion(prompt=PROMPT, max_tokens=6, logit_bias=bias)
    held = await api.completion(prompt=PROMPT, max_tokens=6, logit_bias=bias, min_tokens=3)
    ignored = await api.completion(prompt=PROMPT, max_tokens=6, logit_bias=bias, ignore_eos=True)
    assert stopped.status == held.status == ignored.status == 200
    assert stopped.json["choices"][0]["finish_reason"] == "stop"
    assert stopped.json["usage"]["completion_tokens"] == 1
    assert held.json["choices"][0]["finish_reason"] == "stop"
    assert held.json["usage"]["completion_tokens"] == 4
    assert ignored.json["choices"][0]["finish_reason"] == "length"
    assert ignored.json["usage"]["completion_tokens"] == 6


async def test_skip_special_tokens_in_completions(api: Api, ref: Reference) -> None:
    body = {"prompt": PROMPT, "max_tokens": 2, "ignore_eos": True,
            "logit_bias": {str(EOS_ID): 100}}
    skipped = await api.completion(**body)
    shown = await api.completion(**body, skip_special_tokens=False)
    assert skipped.json["choices"][0]["text"] == ""
    assert shown.json["choices"][0]["text"] == ref.tokenizer.decode([EOS_ID, EOS_ID])


# ---- errors ------------------------------------------------------------------------------


async def test_missing_prompt_is_400(api: Api) -> None:
    assert_error(await api.post("/v1/completions", {"model": MODEL}), 400, param="prompt",
                 type="invalid_request_error")


@pytest.mark.parametrize("prompt", [{"text": "hi"}, 42, [1, "a"], [[1, 2], "a"], [[1, "a"]],
                                    [3.5], None])
async def test_malformed_prompt_is_400(api: Api, prompt: Any) -> None:
    assert_error(await api.completion(prompt=prompt, max_tokens=2), 400, param="prompt",
                 type="invalid_request_error")


@pytest.mark.parametrize("prompt", [[99999], [-1], [[5, 6], [400]]])
async def test_token_ids_outside_the_vocabulary_are_400(api: Api, prompt: Any) -> None:
    assert_error(await api.completion(prompt=prompt, max_tokens=2), 400, param="prompt",
                 type="invalid_request_error")


@pytest.mark.parametrize(("field", "value"), [
    ("logprobs", -1), ("logprobs", 21), ("logprobs", "3"), ("echo", "yes"),
    ("max_tokens", 0), ("temperature", -1), ("n", 0), ("stop", 3),
])
async def test_bad_completion_parameters_are_400(api: Api, field: str, value: Any) -> None:
    body = {"prompt": PROMPT, "max_tokens": 2, field: value}
    err = assert_error(await api.completion(**body), 400, type="invalid_request_error")
    assert err["param"] is not None and err["param"].split(".")[0].split("[")[0] == field, err


async def test_context_length_exceeded_for_token_ids(api: Api) -> None:
    ids = [5 + i % 200 for i in range(MAX_LEN - 10)]
    err = assert_error(await api.completion(prompt=ids, max_tokens=20), 400,
                       code="context_length_exceeded", type="invalid_request_error")
    msg = err["message"]
    assert str(MAX_LEN) in msg, msg
    assert str(len(ids) + 20) in msg or (str(len(ids)) in msg and "20" in msg), msg
    assert err["param"] == "prompt" and "in the prompt" in msg and "messages" not in msg


async def test_context_length_exceeded_for_a_long_prompt(api: Api, ref: Reference) -> None:
    prompt = "The quick brown fox jumps over the lazy dog. " * 40
    n = len(ref.tokenizer.encode(prompt))
    assert n > MAX_LEN
    err = assert_error(await api.completion(prompt=prompt), 400,
                       code="context_length_exceeded")
    assert str(MAX_LEN) in err["message"] and str(n) in err["message"], err


async def test_one_bad_prompt_in_a_list_rejects_the_request(api: Api) -> None:
    long = [5] * (MAX_LEN + 4)
    err = assert_error(await api.completion(prompt=[[5, 6, 7], long], max_tokens=2), 400,
                       code="context_length_exceeded")
    assert str(MAX_LEN) in err["message"]
    assert api.engine.num_active == 0  # the good prompt was not left running


async def test_unknown_model_is_404(api: Api) -> None:
    err = assert_error(await api.completion(model="gpt-9", prompt=PROMPT), 404,
                       code="model_not_found")
    assert err["message"] == "The model `gpt-9` does not exist"


async def test_completions_needs_the_key(api: Api) -> None:
    assert_error(await api.post("/v1/completions", {"model": MODEL, "prompt": PROMPT}, key=None),
                 401)
    assert_error(await api.post("/v1/completions", {"model": MODEL, "prompt": PROMPT},
                                key="sk-nope"), 401)


async def test_completions_wrong_method_and_bad_json(api: Api) -> None:
    assert_error(await api.get("/v1/completions"), 405)
    assert_error(await api.post("/v1/completions", raw="{'prompt': 'hi'}"), 400,
                 type="invalid_request_error")
    ok = await api.completion(prompt=PROMPT, max_tokens=1)
    assert ok.status == 200, ok.text
