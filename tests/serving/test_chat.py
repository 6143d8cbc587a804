"""POST /v1/chat/completions in-process: every parameter's effect, every error path.

Expected texts come from the offline engine on the same tiny checkpoint (tests/serving/
conftest.py `ref`), never from the server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.serving.conftest import (
    EOS_ID,
    HELLO,
    MAX_LEN,
    MODEL,
    Api,
    Reference,
    assert_created_now,
    assert_error,
    assert_usage,
    make_api,
)

# ---- the plain answer --------------------------------------------------------------------


async def test_greedy_answer_matches_offline_engine(api: Api, ref: Reference) -> None:
    resp = await api.chat(messages=HELLO, temperature=0, max_tokens=8)
    assert resp.status == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json
    expected = ref.chat(HELLO, temperature=0, max_tokens=8)
    assert isinstance(body["id"], str) and body["id"]
    assert body["object"] == "chat.completion"
    assert_created_now(body["created"])
    assert body["model"] == MODEL
    assert len(body["choices"]) == 1
    choice = body["choices"][0]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == expected.outputs[0].text
    assert choice["finish_reason"] == "length"
    assert choice.get("logprobs") is None
    assert_usage(body["usage"], len(expected.prompt_token_ids), 8)
    # The server renders the conversation through the model's chat template.
    assert len(expected.prompt_token_ids) == len(ref.chat_prompt_ids(HELLO))


async def test_each_response_has_its_own_id(api: Api) -> None:
    a = await api.chat(messages=HELLO, max_tokens=1)
    b = await api.chat(messages=HELLO, max_tokens=1)
    assert a.status == b.status == 200
    assert a.json["id"] != b.json["id"]


async def test_multi_turn_with_system_prompt_renders_every_message(api: Api, ref: Reference) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant named Hermes."},
        {"role": "user", "content": "Who won the world series in 2020?"},
        {"role": "assistant", "content": "The Los Angeles Dodgers won the World Series in 2020."},
        {"role": "user", "content": "Where was it played?"},
    ]
    resp = await api.chat(messages=messages, temperature=0, max_tokens=4)
    assert resp.status == 200, resp.text
    expected = ref.chat(messages, temperature=0, max_tokens=4)
    assert resp.json["usage"]["prompt_tokens"] == len(expected.prompt_token_ids)
    assert resp.json["choices"][0]["message"]["content"] == expected.outputs[0].text


async def test_default_max_tokens_fills_the_context(api: Api, ref: Reference) -> None:
    """OpenAI's chat default: no limit but the context (the random model never says EOS)."""
    resp = await api.chat(messages=HELLO, temperature=0)
    assert resp.status == 200, resp.text
    expected = ref.chat(HELLO, temperature=0, max_tokens=None)
    choice = resp.json["choices"][0]
    assert choice["message"]["content"] == expected.outputs[0].text
    assert choice["finish_reason"] == expected.outputs[0].finish_reason == "length"
    assert resp.json["usage"]["total_tokens"] == MAX_LEN


async def test_text_content_parts_are_accepted(api: Api) -> None:
    plain = await api.chat(messages=HELLO, temperature=0, max_tokens=4)
    parts = await api.chat(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}],
        temperature=0, max_tokens=4,
    )
    assert plain.status == parts.status == 200, parts.text
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert parts.json["usage"][key] == plain.json["usage"][key]
    assert parts.json["choices"][0]["message"] == plain.json["choices"][0]["message"]


async def test_optional_openai_fields_are_accepted(api: Api, ref: Reference) -> None:
    resp = await api.chat(messages=HELLO, temperature=0, max_tokens=3, user="someone",
                          stream=False, response_format={"type": "text"}, top_p=1, n=1)
    assert resp.status == 200, resp.text
    expected = ref.chat(HELLO, temperature=0, max_tokens=3)
    assert resp.json["choices"][0]["message"]["content"] == expected.outputs[0].text


# ---- length and stopping -----------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_token_limit_cuts_with_finish_reason_length(api: Api, ref: Reference,
                                                          field: str) -> None:
    resp = await api.chat(messages=HELLO, temperature=0, **{field: 3})
    assert resp.status == 200, resp.text
    expected = ref.chat(HELLO, temperature=0, max_tokens=3)
    choice = resp.json["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == expected.outputs[0].text
    assert_usage(resp.json["usage"], len(expected.prompt_token_ids), 3)


async def test_eos_ends_the_answer_with_finish_reason_stop(api: Api, ref: Reference) -> None:
    # +100 on <|im_end|> makes it the first token: an empty answer that stopped.
    resp = await api.chat(messages=HELLO, max_tokens=10, logit_bias={str(EOS_ID): 100})
    assert resp.status == 200, resp.text
    expected = ref.chat(HELLO, max_tokens=10, logit_bias={EOS_ID: 100})
    choice = resp.json["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == ""
    assert "<|im_end|>" not in choice["message"]["content"]
    assert resp.json["usage"]["completion_tokens"] == len(expected.outputs[0].token_ids)


def _ascii_run_stop(text: str, start: int = 2) -> tuple[str, int]:
    """A 2-character ASCII stop string found in text at or after `start` (first occurrence)."""
    for i in range(start, len(text) - 1):
        s = text[i:i + 2]
        if s.isascii() and s.isprintable() and text.find(s) == i:
            return s, i
    raise AssertionError(f"no usable stop string in {text!r}")


@pytest.mark.parametrize("as_list", [False, True])
async def test_stop_string_cuts_and_is_not_included(api: Api, ref: Reference,
                                                    as_list: bool) -> None:
    full = ref.chat(HELLO, temperature=0, max_tokens=16).outputs[0].text
    stop, at = _ascii_run_stop(full)
    stop_param: Any = ["never-there-zz", stop] if as_list else stop
    resp = await api.chat(messages=HELLO, temperature=0, max_tokens=16, stop=stop_param)
    assert resp.status == 200, resp.text
    choice = resp.json["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == full[:at]
    assert stop not in choice["message"]["content"]


async def test_stop_token_ids_end_the_answer(api: Api, ref: Reference) -> None:
    greedy = ref.chat(HELLO, temperature=0, max_tokens=16).outputs[0].token_ids
    # The first token that did not appear before it, a few tokens in.
    k = next(i for i in range(2, len(greedy)) if greedy[i] not in greedy[:i])
    resp = await api.chat(messages=HELLO, temperature=0, max_tokens=16, stop_token_ids=[greedy[k]])
    assert resp.status == 200, resp.text
    expected = ref.chat(HELLO, temperature=0, max_tokens=16, stop_token_ids=[greedy[k]])
    assert len(expected.outputs[0].token_ids) == k + 1
    choice = resp.json["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == expected.outputs[0].text
    assert resp.json["usage"]["completion_tokens"] == k + 1


async def test_min_tokens_holds_back_eos(api: Api, ref: Reference) -> None:
    bias = {str(EOS_ID): 100}
    resp = await api.chat(messages=HELLO, temperature=0, max_tokens=10, min_tokens=4,
                          logit_bias=bias)
    assert resp.status == 200, resp.text
    expected = ref.chat(HELLO, temperature=0, max_tokens=10, min_tokens=4,
                        logit_bias={EOS_ID: 100})
    choice = resp.json["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert resp.json["usage"]["completion_tokens"] == 5  # 4 forced tokens, then the EOS
    assert choice["message"]["content"] == expected.outputs[0].text
    assert choice["message"]["content"]  # not the empty answer EOS alone gives


async def test_ignore_eos_generates_past_eos(api: Api) -> None:
    resp = await api.chat(messages=HELLO, temperature=0, max_tokens=4, ignore_eos=True,
                          logit_bias={str(EOS_ID): 100})
    assert resp.status == 200, resp.text
    choice = resp.json["choices"][0]
    assert choice["finish_reason"] == "length"
    assert resp.json["usage"]["completion_tokens"] == 4
    assert choice["message"]["content"] == ""  # EOS is special: skipped in the text


async def test_skip_special_tokens_false_shows_them(api: Api, ref: Reference) -> None:
    resp = await api.chat(messages=HELLO, temperature=0, max_tokens=3, ignore_eos=True,
                          logit_bias={str(EOS_ID): 100}, skip_special_tokens=False)
    assert resp.status == 200, resp.text
    assert resp.json["choices"][0]["message"]["content"] == ref.tokenizer.decode([EOS_ID] * 3)


# ---- sampling ----------------------------------------------------------------------------


async def test_temperature_zero_is_deterministic(api: Api, ref: Reference) -> None:
    a, b = await asyncio.gather(api.chat(messages=HELLO, temperature=0, max_tokens=8),
                                api.chat(messages=HELLO, temperature=0, max_tokens=8))
    assert a.status == b.status == 200
    expected = ref.chat(HELLO, temperature=0, max_tokens=8).outputs[0].text
    assert a.json["choices"][0]["message"]["content"] == expected
    assert b.json["choices"][0]["message"]["content"] == expected


async def test_seed_makes_sampling_reproducible(api: Api, ref: Reference) -> None:
    async def sample(seed: int) -> str:
        resp = await api.chat(messages=HELLO, temperature=1.0, max_tokens=8, seed=seed)
        assert resp.status == 200, resp.text
        return resp.json["choices"][0]["message"]["content"]

    first, again, other = await sample(123), await sample(123), await sample(124)
    assert first == again
    assert first == ref.chat(HELLO, temperature=1.0, max_tokens=8, seed=123).outputs[0].text
    assert other == ref.chat(HELLO, temperature=1.0, max_tokens=8, seed=124).outputs[0].text
    assert first != other


async def test_n_gives_n_indexed_choices(api: Api, ref: Reference) -> None:
    resp = await api.chat(messages=HELLO, n=3, temperature=1.0, seed=7, max_tokens=5)
    assert resp.status == 200, resp.text
    choices = resp.json["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    expected = ref.chat(HELLO, n=3, temperature=1.0, seed=7, max_tokens=5)
    assert [c["message"]["content"] for c in choices] == [o.text for o in expected.outputs]
    assert len({c["message"]["content"] for c in choices}) > 1
    assert all(c["finish_reason"] == "length" for c in choices)
    assert_usage(resp.json["usage"], len(expected.prompt_token_ids), 15)


async def test_logit_bias_plus_100_forces_a_token(api: Api, ref: Reference) -> None:
    word = ref.word_tokens(1)[0]
    resp = await api.chat(messages=HELLO, temperature=1.0, max_tokens=4,
                          logit_bias={str(word): 100})
    assert resp.status == 200, resp.text
    assert resp.json["choices"][0]["message"]["content"] == ref.tokenizer.decode([word] * 4)


async def test_logit_bias_minus_100_bans_the_greedy_token(api: Api, ref: Reference) -> None:
    greedy = ref.chat(HELLO, temperature=0, max_tokens=4).outputs[0]
    first = greedy.token_ids[0]
    resp = await api.chat(messages=HELLO, temperature=0, max_tokens=4,
                          logit_bias={str(first): -100})
    assert resp.status == 200, resp.text
    banned = ref.chat(HELLO, temperature=0, max_tokens=4, logit_bias={first: -100}).outputs[0]
    assert first not in banned.token_ids
    assert resp.json["choices"][0]["message"]["content"] == banned.text != greedy.text


@pytest.mark.parametrize("params", [
    {"frequency_penalty": 2.0},
    {"presence_penalty": 2.0},
    {"repetition_penalty": 1.5},
], ids=lambda p: next(iter(p)))
async def test_penalties_change_the_greedy_answer(api: Api, ref: Reference,
                                                  params: dict[str, float]) -> None:
    greedy = ref.chat(HELLO, temperature=0, max_tokens=16).outputs[0].text
    expected = ref.chat(HELLO, temperature=0, max_tokens=16, **params).outputs[0].text
    assert expected != greedy  # the random model repeats tokens: a penalty shows
    resp = await api.chat(messages=HELLO, temperature=0, max_tokens=16, **params)
    assert resp.status == 200, resp.text
    assert resp.json["choices"][0]["message"]["content"] == expected


@pytest.mark.parametrize("params", [
    {"top_k": 1},
    {"top_p": 1e-6},
    {"min_p": 1.0},
], ids=lambda p: next(iter(p)))
async def test_truncation_to_one_token_is_greedy(api: Api, ref: Reference,
                                                 params: dict[str, float]) -> None:
    """top_k 1, a tiny top_p and min_p 1 all leave only the most likely token: greedy."""
    greedy = ref.chat(HELLO, temperature=0, max_tokens=8).outputs[0].text
    sampled = ref.chat(HELLO, temperature=1.5, max_tokens=8, seed=3).outputs[0].text
    assert sampled != greedy
    resp = await api.chat(messages=HELLO, temperature=1.5, max_tokens=8, seed=3, **params)
    assert resp.status == 200, resp.text
    assert resp.json["choices"][0]["message"]["content"] == greedy


# ---- logprobs ----------------------------------------------------------------------------


def _check_token_logprob(entry: dict[str, Any]) -> None:
    assert isinstance(entry["token"], str)
    assert isinstance(entry["logprob"], float) and entry["logprob"] <= 0.0
    assert isinstance(entry["bytes"], list) and all(0 <= b < 256 for b in entry["bytes"])


async def test_logprobs_and_top_logprobs_chat_shape(api: Api, ref: Reference) -> None:
    resp = await api.chat(messages=HELLO, temperature=0, max_tokens=4, logprobs=True,
                          top_logprobs=3)
    assert resp.status == 200, resp.text
    expected = ref.chat(HELLO, temperature=0, max_tokens=4, logprobs=3).outputs[0]
    content = resp.json["choices"][0]["logprobs"]["content"]
    assert len(content) == 4
    for entry, position in zip(content, expected.logprobs, strict=True):
        _check_token_logprob(entry)
        assert bytes(entry["bytes"]) == position.chosen.bytes
        assert entry["logprob"] == pytest.approx(position.chosen.logprob, abs=1e-4)
        top = entry["top_logprobs"]
        assert len(top) == 3
        for alt, want in zip(top, position.top, strict=True):
            _check_token_logprob(alt)
            assert "top_logprobs" not in alt
            assert bytes(alt["bytes"]) == want.bytes
            assert alt["logprob"] == pytest.approx(want.logprob, abs=1e-4)
        assert [a["logprob"] for a in top] == sorted((a["logprob"] for a in top), reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert top[0]["bytes"] == entry["bytes"]
    joined = b"".join(bytes(e["bytes"]) for e in content)
    assert joined.decode("utf-8", errors="replace") == resp.json["choices"][0]["message"]["content"]


async def test_logprobs_without_top_logprobs(api: Api) -> None:
    resp = await api.chat(messages=HELLO, temperature=0, max_tokens=3, logprobs=True)
    assert resp.status == 200, resp.text
    content = resp.json["choices"][0]["logprobs"]["content"]
    assert len(content) == 3
    for entry in content:
        _check_token_logprob(entry)
        assert entry["top_logprobs"] == []


async def test_logprobs_false_gives_null(api: Api) -> None:
    resp = await api.chat(messages=HELLO, max_tokens=2, logprobs=False)
    assert resp.status == 200, resp.text
    assert resp.json["choices"][0].get("logprobs") is None


# ---- errors ------------------------------------------------------------------------------


async def test_malformed_json_is_400(api: Api) -> None:
    resp = await api.post("/v1/chat/completions", raw='{"model": "tiny", "messages": [')
    assert_error(resp, 400, type="invalid_request_error")
    # Python literals and trailing commas (the llama-api doc's example as printed).
    resp = await api.post("/v1/chat/completions",
                          raw='{"model": "tiny", "messages": [], "stream": False,}')
    assert_error(resp, 400, type="invalid_request_error")


@pytest.mark.parametrize("raw", ["[]", '"hello"', "42", "null", ""])
async def test_body_that_is_not_an_object_is_400(api: Api, raw: str) -> None:
    assert_error(await api.post("/v1/chat/completions", raw=raw), 400,
                 type="invalid_request_error")


async def test_missing_messages_is_400(api: Api) -> None:
    assert_error(await api.post("/v1/chat/completions", {"model": MODEL}), 400,
                 param="messages", type="invalid_request_error")


async def test_empty_messages_is_400(api: Api) -> None:
    assert_error(await api.chat(messages=[]), 400, param="messages",
                 type="invalid_request_error")


WRONG_TYPES = [
    ("messages", "Hello"),
    ("temperature", "hot"),
    ("top_p", {"p": 1}),
    ("max_tokens", "ten"),
    ("max_tokens", 2.5),
    ("max_tokens", True),
    ("max_completion_tokens", "ten"),
    ("n", "2"),
    ("n", [2]),
    ("stop", 5),
    ("stop", [1, 2]),
    ("logprobs", "yes"),
    ("top_logprobs", "3"),
    ("seed", "abc"),
    ("logit_bias", ["5", 10]),
    ("stream", "yes"),
    ("stream_options", "yes"),
    ("presence_penalty", "x"),
    ("frequency_penalty", [0.5]),
    ("top_k", 1.5),
    ("min_tokens", "2"),
    ("ignore_eos", "no"),
    ("stop_token_ids", 5),
]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES,
                         ids=[f"{f}={v!r}" for f, v in WRONG_TYPES])
async def test_wrong_type_is_400_naming_the_field(api: Api, field: str, value: Any) -> None:
    body = {"messages": HELLO, "max_tokens": 2, field: value}
    err = assert_error(await api.chat(**body), 400, type="invalid_request_error")
    assert err["param"] is not None and err["param"].split(".")[0].split("[")[0] == field, err


OUT_OF_RANGE = [
    ("temperature", -0.5),
    ("top_p", 1.5),
    ("max_tokens", 0),
    ("max_tokens", -5),
    ("max_completion_tokens", 0),
    ("n", 0),
    ("presence_penalty", 2.5),
    ("frequency_penalty", -3),
    ("repetition_penalty", 0),
    ("top_k", -2),
    ("min_p", 1.5),
    ("top_logprobs", 21),
    ("top_logprobs", -1),
    ("logit_bias", {"5": 150}),
    ("logit_bias", {"abc": 1}),
    ("logit_bias", {"99999": 1}),
    ("stop_token_ids", [99999]),
    ("min_tokens", -1),
]


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE,
                         ids=[f"{f}={v!r}" for f, v in OUT_OF_RANGE])
async def test_out_of_range_is_400_naming_the_field(api: Api, field: str, value: Any) -> None:
    body = {"messages": HELLO, "max_tokens": 2, field: value}
    if field == "top_logprobs":
        body["logprobs"] = True
    err = assert_error(await api.chat(**body), 400, type="invalid_request_error")
    assert err["param"] is not None and err["param"].split(".")[0].split("[")[0] == field, err


async def test_min_tokens_above_max_tokens_is_400(api: Api) -> None:
    err = assert_error(await api.chat(messages=HELLO, max_tokens=2, min_tokens=5), 400)
    assert err["param"] in ("min_tokens", "max_tokens"), err


async def test_top_logprobs_without_logprobs_is_400(api: Api) -> None:
    """OpenAI: top_logprobs requires logprobs true; silently ignoring it is a bug."""
    assert_error(await api.chat(messages=HELLO, max_tokens=2, top_logprobs=3), 400,
                 param="top_logprobs")


@pytest.mark.parametrize("message", [
    {"role": "user"},
    {"content": "no role"},
    {"role": "wizard", "content": "hi"},
    "just a string",
])
async def test_malformed_message_is_400(api: Api, message: Any) -> None:
    err = assert_error(await api.chat(messages=[message], max_tokens=2), 400,
                       type="invalid_request_error")
    assert err["param"] is not None and err["param"].startswith("messages"), err


async def test_image_content_part_is_400(api: Api) -> None:
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]}]
    err = assert_error(await api.chat(messages=messages, max_tokens=2), 400,
                       type="invalid_request_error")
    assert err["param"] is not None and err["param"].startswith("messages"), err
    assert "image" in err["message"].lower()


async def test_prompt_longer_than_context_is_400(api: Api, ref: Reference) -> None:
    messages = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 40}]
    prompt_tokens = len(ref.chat_prompt_ids(messages))
    assert prompt_tokens > MAX_LEN
    err = assert_error(await api.chat(messages=messages), 400, code="context_length_exceeded",
                       type="invalid_request_error")
    assert str(MAX_LEN) in err["message"] and str(prompt_tokens) in err["message"], err


def _fox(reps: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * reps}]


async def test_prompt_plus_max_tokens_over_context_is_400(api: Api, ref: Reference) -> None:
    reps = 1
    while len(ref.chat_prompt_ids(_fox(reps + 1))) < MAX_LEN - 20:
        reps += 1
    messages = _fox(reps)
    prompt_tokens = len(ref.chat_prompt_ids(messages))
    max_tokens = MAX_LEN - prompt_tokens + 5
    err = assert_error(await api.chat(messages=messages, max_tokens=max_tokens), 400,
                       code="context_length_exceeded", type="invalid_request_error")
    msg = err["message"]
    assert str(MAX_LEN) in msg, msg
    assert str(prompt_tokens + max_tokens) in msg or (
        str(prompt_tokens) in msg and str(max_tokens) in msg), msg
    # Exactly at the limit is fine.
    ok = await api.chat(messages=messages, max_tokens=MAX_LEN - prompt_tokens, temperature=0,
                        logit_bias={str(EOS_ID): 100})
    assert ok.status == 200, ok.text


async def test_unknown_model_is_404_model_not_found(api: Api) -> None:
    err = assert_error(await api.chat(model="no-such-model", messages=HELLO), 404,
                       code="model_not_found")
    assert err["message"] == "The model `no-such-model` does not exist"


@pytest.mark.parametrize("key", [None, "sk-wrong", ""])
async def test_missing_or_wrong_key_is_401(api: Api, key: str | None) -> None:
    resp = await api.post("/v1/chat/completions", {"model": MODEL, "messages": HELLO}, key=key)
    assert_error(resp, 401)


async def test_key_must_be_a_bearer_token(api: Api) -> None:
    resp = await api.post("/v1/chat/completions", {"model": MODEL, "messages": HELLO}, key=None,
                          headers={"Authorization": "Basic sk-test"})
    assert_error(resp, 401)


async def test_wrong_method_is_405(api: Api) -> None:
    assert_error(await api.get("/v1/chat/completions"), 405)


async def test_unknown_path_is_404(api: Api) -> None:
    assert_error(await api.post("/v1/chat/completion", {"model": MODEL}), 404)
    assert_error(await api.get("/v1/nothing-here"), 404)


async def test_oversized_body_is_rejected_with_the_envelope(aiohttp_client: Any,
                                                            engine: Any) -> None:
    api = await make_api(aiohttp_client, engine, max_body_bytes=4096)
    messages = [{"role": "user", "content": "x" * 20000}]
    resp = await api.chat(messages=messages, max_tokens=2)
    assert resp.status == 413, resp.text
    assert_error(resp, resp.status)
    ok = await api.chat(messages=HELLO, max_tokens=2)
    assert ok.status == 200, ok.text


async def test_server_keeps_serving_after_errors(api: Api, ref: Reference) -> None:
    await api.post("/v1/chat/completions", raw="{not json")
    await api.chat(messages=HELLO, temperature=-1)
    await api.chat(model="nope", messages=HELLO)
    await api.chat(messages=[{"role": "user", "content": "x " * 400}])
    await api.post("/v1/chat/completions", {"model": MODEL, "messages": HELLO}, key="bad")
    resp = await api.chat(messages=HELLO, temperature=0, max_tokens=4)
    assert resp.status == 200, resp.text
    expected = ref.chat(HELLO, temperature=0, max_tokens=4).outputs[0].text
    assert resp.json["choices"][0]["message"]["content"] == expected
    # Nothing was left behind in the engine by the rejected requests.
    assert api.engine.num_active == 0
    assert not api.engine.core.has_unfinished()


async def test_full_queue_answers_503_or_429_with_retry_after(aiohttp_client: Any,
                                                              tiny_model: Any) -> None:
    from engine import AsyncEngine, EngineConfig

    engine = AsyncEngine(EngineConfig(str(tiny_model), max_model_len=MAX_LEN, max_num_seqs=1))
    try:
        api = await make_api(aiohttp_client, engine, max_waiting_requests=1)
        results = await asyncio.gather(*(
            api.chat(messages=HELLO, max_tokens=20, ignore_eos=True) for _ in range(8)))
        rejected = [r for r in results if r.status != 200]
        assert rejected, "8 requests at once with 1 running slot and 1 waiting slot all passed"
        for r in rejected:
            assert r.status in (429, 503), r.text
            assert_error(r, r.status)
            assert "Retry-After" in r.headers
        assert any(r.status == 200 for r in results)
        ok = await api.chat(messages=HELLO, max_tokens=2)
        assert ok.status == 200, ok.text
    finally:
        await engine.shutdown()
