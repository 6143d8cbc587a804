"""Server-sent events: chunk structure and order, usage, n > 1, stop strings, disconnects."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from engine import SamplingParams
from tests.serving.conftest import (
    AUTH,
    HELLO,
    MODEL,
    Api,
    Reference,
    Stream,
    assert_created_now,
    assert_error,
    assert_usage,
    wait_idle,
)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def check_common(events: list[dict[str, Any]], obj: str) -> None:
    """Every chunk: same id, created, model; the right object; a choices list."""
    assert events, "no chunk before [DONE]"
    first = events[0]
    assert isinstance(first["id"], str) and first["id"]
    assert_created_now(first["created"])
    assert first["model"] == MODEL
    for ev in events:
        assert ev["object"] == obj, ev
        assert (ev["id"], ev["created"], ev["model"]) == (first["id"], first["created"],
                                                          first["model"]), ev
        assert isinstance(ev["choices"], list), ev


def per_choice(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for ev in events:
        for choice in ev["choices"]:
            out.setdefault(choice["index"], []).append(choice)
    return out


def check_finish_order(choices: list[dict[str, Any]]) -> str:
    """finish_reason is on every chunk of the choice, null until its last one."""
    for c in choices:
        assert "finish_reason" in c, c
    assert all(c["finish_reason"] is None for c in choices[:-1]), choices
    assert choices[-1]["finish_reason"] is not None, choices[-1]
    return choices[-1]["finish_reason"]


def check_chat_deltas(choices: list[dict[str, Any]]) -> str:
    assert choices[0]["delta"] == {"role": "assistant", "content": ""}, choices[0]
    text = ""
    for c in choices[1:]:
        delta = c["delta"]
        assert isinstance(delta, dict), c
        assert delta.get("role") in (None, "assistant"), c
        text += delta.get("content") or ""
    return text


def check_no_usage_chunk(events: list[dict[str, Any]]) -> None:
    for ev in events:
        assert ev["choices"], f"a chunk without choices while usage was not asked: {ev}"
        assert ev.get("usage") is None, ev


def split_usage(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """include_usage: the last chunk has no choices and the totals; before it, every chat
    chunk has usage null and no completion chunk has the key (OpenAI's schemas: chat
    chunks' usage is nullable, a completion's is not)."""
    *body, last = events
    assert last["choices"] == [], last
    assert isinstance(last["usage"], dict), last
    for ev in body:
        if ev["object"] == "chat.completion.chunk":
            assert "usage" in ev and ev["usage"] is None, ev
        else:
            assert "usage" not in ev, ev
        assert ev["choices"], ev
    return body, last["usage"]


# ---- chat --------------------------------------------------------------------------------


async def test_chat_stream_structure_without_usage(api: Api, ref: Reference) -> None:
    stream = await api.stream(CHAT, {"messages": HELLO, "temperature": 0, "max_tokens": 6})
    assert stream.status == 200, stream.text
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    check_common(stream.events, "chat.completion.chunk")
    check_no_usage_chunk(stream.events)
    choices = per_choice(stream.events)
    assert list(choices) == [0]
    assert check_finish_order(choices[0]) == "length"
    text = check_chat_deltas(choices[0])
    assert text == ref.chat(HELLO, temperature=0, max_tokens=6).outputs[0].text
    plain = await api.chat(messages=HELLO, temperature=0, max_tokens=6)
    assert text == plain.json["choices"][0]["message"]["content"]
    assert stream.events[0]["id"] != plain.json["id"]


async def test_chat_stream_with_usage(api: Api, ref: Reference) -> None:
    stream = await api.stream(CHAT, {"messages": HELLO, "temperature": 0, "max_tokens": 5,
                                     "stream_options": {"include_usage": True}})
    assert stream.status == 200, stream.text
    check_common(stream.events, "chat.completion.chunk")
    body, usage = split_usage(stream.events)
    expected = ref.chat(HELLO, temperature=0, max_tokens=5)
    assert_usage(usage, len(expected.prompt_token_ids), 5)
    choices = per_choice(body)
    assert check_finish_order(choices[0]) == "length"
    assert check_chat_deltas(choices[0]) == expected.outputs[0].text


async def test_include_usage_false_sends_no_usage_chunk(api: Api) -> None:
    stream = await api.stream(CHAT, {"messages": HELLO, "max_tokens": 3,
                                     "stream_options": {"include_usage": False}})
    assert stream.status == 200, stream.text
    check_no_usage_chunk(stream.events)


async def test_chat_stream_finish_reason_stop(api: Api) -> None:
    stream = await api.stream(CHAT, {"messages": HELLO, "max_tokens": 6,
                                     "logit_bias": {"2": 100}})
    assert stream.status == 200, stream.text
    choices = per_choice(stream.events)
    assert check_finish_order(choices[0]) == "stop"
    assert check_chat_deltas(choices[0]) == ""


async def test_chat_stream_n_choices(api: Api, ref: Reference) -> None:
    stream = await api.stream(CHAT, {
        "messages": HELLO, "n": 3, "temperature": 1.0, "seed": 9, "max_tokens": 4,
        "stream_options": {"include_usage": True},
    })
    assert stream.status == 200, stream.text
    check_common(stream.events, "chat.completion.chunk")
    body, usage = split_usage(stream.events)
    expected = ref.chat(HELLO, n=3, temperature=1.0, seed=9, max_tokens=4)
    assert_usage(usage, len(expected.prompt_token_ids), 12)
    choices = per_choice(body)
    assert sorted(choices) == [0, 1, 2]
    for i, out in enumerate(expected.outputs):
        assert check_finish_order(choices[i]) == "length"
        assert check_chat_deltas(choices[i]) == out.text


async def test_chat_stream_logprobs(api: Api, ref: Reference) -> None:
    stream = await api.stream(CHAT, {"messages": HELLO, "temperature": 0, "max_tokens": 4,
                                     "logprobs": True, "top_logprobs": 2})
    assert stream.status == 200, stream.text
    entries = []
    for c in per_choice(stream.events)[0]:
        if c.get("logprobs"):
            entries.extend(c["logprobs"]["content"])
    expected = ref.chat(HELLO, temperature=0, max_tokens=4, logprobs=2).outputs[0].logprobs
    assert [bytes(e["bytes"]) for e in entries] == [p.chosen.bytes for p in expected]
    for e, p in zip(entries, expected, strict=True):
        assert abs(e["logprob"] - p.chosen.logprob) < 1e-4
        assert len(e["top_logprobs"]) == 2


async def test_stop_string_split_across_tokens_is_held_back(api: Api, ref: Reference) -> None:
    """A stop string made of the end of one token and the start of the next."""
    out = ref.chat(HELLO, temperature=0, max_tokens=16).outputs[0]
    pieces = [ref.tokenizer.decode([t]) for t in out.token_ids]
    stop = None
    for k in range(1, len(pieces) - 1):
        a, b = pieces[k], pieces[k + 1]
        if a and b and (a[-1] + b[0]).isascii() and (a[-1] + b[0]).isprintable():
            candidate = a[-1] + b[0]
            if out.text.find(candidate) == len("".join(pieces[:k + 1])) - 1:
                stop = candidate
                break
    assert stop is not None, pieces
    expected = out.text[:out.text.find(stop)]
    stream = await api.stream(CHAT, {"messages": HELLO, "temperature": 0, "max_tokens": 16,
                                     "stop": stop})
    assert stream.status == 200, stream.text
    choices = per_choice(stream.events)[0]
    assert check_finish_order(choices) == "stop"
    for c in choices:
        assert stop not in (c["delta"].get("content") or "")
    assert check_chat_deltas(choices) == expected
    # Never more text sent than the final answer: the partial match was held back.
    sent = ""
    for c in choices[1:]:
        sent += c["delta"].get("content") or ""
        assert expected.startswith(sent), (sent, expected)


async def test_errors_before_streaming_are_plain_json(api: Api) -> None:
    resp = await api.post(CHAT, {"model": MODEL, "messages": HELLO, "stream": True,
                                 "temperature": -2})
    assert_error(resp, 400, param="temperature")
    resp = await api.post(CHAT, {"model": "nope", "messages": HELLO, "stream": True})
    assert_error(resp, 404, code="model_not_found")


# ---- completions -------------------------------------------------------------------------


async def test_completion_stream_structure_and_usage(api: Api, ref: Reference) -> None:
    prompt = "The capital of France is"
    stream = await api.stream(COMPLETIONS, {"prompt": prompt, "temperature": 0, "max_tokens": 6,
                                            "stream_options": {"include_usage": True}})
    assert stream.status == 200, stream.text
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    check_common(stream.events, "text_completion")
    body, usage = split_usage(stream.events)
    expected = ref.generate(prompt, temperature=0, max_tokens=6)
    assert_usage(usage, len(expected.prompt_token_ids), 6)
    choices = per_choice(body)
    assert list(choices) == [0]
    assert check_finish_order(choices[0]) == "length"
    text = "".join(c["text"] for c in choices[0])
    assert text == expected.outputs[0].text
    plain = await api.completion(prompt=prompt, temperature=0, max_tokens=6)
    assert text == plain.json["choices"][0]["text"]


async def test_completion_stream_without_usage(api: Api) -> None:
    stream = await api.stream(COMPLETIONS, {"prompt": "Hello", "max_tokens": 3})
    assert stream.status == 200, stream.text
    check_common(stream.events, "text_completion")
    check_no_usage_chunk(stream.events)
    assert check_finish_order(per_choice(stream.events)[0]) == "length"


async def test_completion_stream_several_prompts_and_n(api: Api, ref: Reference) -> None:
    prompts = ["Hello", "def f(x):"]
    stream = await api.stream(COMPLETIONS, {"prompt": prompts, "n": 2, "temperature": 1.0,
                                            "seed": 4, "max_tokens": 3})
    assert stream.status == 200, stream.text
    check_common(stream.events, "text_completion")
    choices = per_choice(stream.events)
    assert sorted(choices) == [0, 1, 2, 3]
    expected = [o.text for p in prompts
                for o in ref.generate(p, n=2, temperature=1.0, seed=4, max_tokens=3).outputs]
    for i, text in enumerate(expected):
        assert check_finish_order(choices[i]) == "length"
        assert "".join(c["text"] for c in choices[i]) == text


async def test_completion_stream_echo(api: Api, ref: Reference) -> None:
    prompt = "Hello world"
    stream = await api.stream(COMPLETIONS, {"prompt": prompt, "temperature": 0, "max_tokens": 3,
                                            "echo": True})
    assert stream.status == 200, stream.text
    text = "".join(c["text"] for c in per_choice(stream.events)[0])
    assert text == prompt + ref.generate(prompt, temperature=0, max_tokens=3).outputs[0].text


# ---- load and disconnects ----------------------------------------------------------------


async def test_32_concurrent_streams_all_complete(api: Api, ref: Reference) -> None:
    prompts = [f"Hello {i} the quick brown fox" for i in range(32)]
    streams = await asyncio.gather(*(
        api.stream(COMPLETIONS, {"prompt": p, "temperature": 0, "max_tokens": 4})
        for p in prompts))
    expected = ref.llm.generate(prompts, SamplingParams(temperature=0, max_tokens=4))
    for stream, want in zip(streams, expected, strict=True):
        assert stream.status == 200, stream.text
        choices = per_choice(stream.events)[0]
        assert check_finish_order(choices) == "length"
        assert "".join(c["text"] for c in choices) == want.outputs[0].text
    await wait_idle(api.engine)
    bm = api.engine.core.block_manager
    assert bm.num_free_blocks == bm.num_blocks


async def _disconnect_after(api: Api, path: str, body: dict[str, Any], chunks: int) -> int:
    """Open a stream, read `chunks` events, then drop the connection. Returns events read."""
    resp = await api.client.post(path, json={"model": MODEL, **body, "stream": True},
                                 headers=AUTH)
    assert resp.status == 200, await resp.text()
    seen = 0
    while seen < chunks:
        line = await resp.content.readline()
        assert line, "stream ended before the disconnect"
        if line.startswith(b"data: "):
            assert line.strip() != b"data: [DONE]"
            json.loads(line[len(b"data: "):])
            seen += 1
    resp.close()  # closes the connection, not just the response
    return seen


async def test_client_disconnect_aborts_the_request(api: Api) -> None:
    engine = api.engine
    before = engine.stats().generated_tokens
    await _disconnect_after(api, CHAT, {"messages": HELLO, "max_tokens": 200,
                                        "ignore_eos": True}, chunks=4)
    await wait_idle(engine)
    stats = engine.stats()
    assert engine.num_active == 0
    assert stats.num_running == 0 and stats.num_waiting == 0
    assert stats.kv_cache_usage == 0.0 and stats.kv_blocks_free == stats.kv_blocks
    # Aborted, not run to the end: far fewer than the 200 tokens asked for.
    assert stats.generated_tokens - before < 150
    # And the server still answers.
    ok = await api.chat(messages=HELLO, max_tokens=2)
    assert ok.status == 200, ok.text


async def test_disconnect_of_one_stream_leaves_others_running(api: Api, ref: Reference) -> None:
    engine = api.engine
    other = asyncio.create_task(api.stream(COMPLETIONS, {"prompt": "Hello", "temperature": 0,
                                                         "max_tokens": 40, "ignore_eos": True}))
    await _disconnect_after(api, COMPLETIONS, {"prompt": "The quick brown fox",
                                               "max_tokens": 200, "ignore_eos": True}, chunks=3)
    stream: Stream = await other
    assert stream.status == 200, stream.text
    choices = per_choice(stream.events)[0]
    assert check_finish_order(choices) == "length"
    expected = ref.generate("Hello", temperature=0, max_tokens=40, ignore_eos=True)
    assert "".join(c["text"] for c in choices) == expected.outputs[0].text
    await wait_idle(engine)
    stats = engine.stats()
    assert stats.num_running == 0 and stats.num_waiting == 0
    assert stats.kv_blocks_free == stats.kv_blocks
