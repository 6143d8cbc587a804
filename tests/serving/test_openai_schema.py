"""Every answer of the OpenAI operations validates against OpenAI's published schemas
(tests/openai_spec/, MIT): bodies, streamed chunks and error envelopes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine import AsyncEngine
from tests.serving.conftest import HELLO, MODEL, Api, assert_error
from tests.serving.embedding_support import close_all, make_state_api
from tests.serving.openai_schema import check, check_completion_chunk, check_error
from tests.serving.test_retrieval_errors import DOC, post_form

STREAM = "text/event-stream"

CHAT_BODIES = {
    "plain": {"max_tokens": 5, "seed": 1},
    "logprobs": {"max_tokens": 4, "logprobs": True, "top_logprobs": 2},
    "n=2, stop": {"max_tokens": 6, "n": 2, "seed": 3, "temperature": 1.0, "stop": ["a"]},
    "json_object": {"max_tokens": 8, "response_format": {"type": "json_object"}},
}
COMPLETION_BODIES = {
    "plain": {"prompt": "Hello", "max_tokens": 5},
    "logprobs, echo": {"prompt": "Hello", "max_tokens": 4, "logprobs": 2},
    "two prompts, n=2": {"prompt": ["Hi", "Yo"], "max_tokens": 3, "n": 2, "seed": 4,
                         "temperature": 1.0},
    "echo": {"prompt": [5, 6, 7], "max_tokens": 3, "echo": True},
    "echo, logprobs": {"prompt": "Hello there", "max_tokens": 2, "echo": True, "logprobs": 2},
    "echo, max_tokens 0": {"prompt": [5, 6, 7], "max_tokens": 0, "echo": True, "logprobs": 1},
}


def prompt_nulls_filled(body: dict[str, Any]) -> dict[str, Any]:
    """The published schema has no null in token_logprobs / top_logprobs, but OpenAI's own
    API (and vLLM) answer echo with logprobs with null for the first prompt token, which
    has no context, and evaluation harnesses expect it. Only that entry may be null: it is
    filled here, and everything else must validate as is."""
    for choice in body.get("choices", []):
        lp = choice.get("logprobs")
        if not lp or not lp["token_logprobs"] or lp["token_logprobs"][0] is not None:
            continue
        assert lp["top_logprobs"][0] is None and lp["text_offset"][0] == 0
        lp["token_logprobs"][0], lp["top_logprobs"][0] = 0.0, {}
    return body


@pytest.mark.parametrize("extra", CHAT_BODIES.values(), ids=CHAT_BODIES.keys())
async def test_chat_completion(api: Api, extra: dict[str, Any]) -> None:
    resp = await api.chat(messages=HELLO, **extra)
    assert resp.status == 200, resp.text
    check(resp.json, "/chat/completions")
    for choice in resp.json["choices"]:
        assert choice["message"]["refusal"] is None  # OpenAI's field, always present


@pytest.mark.parametrize("usage", [False, True], ids=["no usage", "usage"])
@pytest.mark.parametrize("extra", CHAT_BODIES.values(), ids=CHAT_BODIES.keys())
async def test_chat_chunks(api: Api, extra: dict[str, Any], usage: bool) -> None:
    body = {"messages": HELLO, **extra}
    if usage:
        body["stream_options"] = {"include_usage": True}
    out = await api.stream("/v1/chat/completions", body)
    assert out.status == 200, out.text
    assert out.events
    for event in out.events:
        check(event, "/chat/completions", media=STREAM)


@pytest.mark.parametrize("extra", COMPLETION_BODIES.values(), ids=COMPLETION_BODIES.keys())
async def test_completion(api: Api, extra: dict[str, Any]) -> None:
    resp = await api.completion(**extra)
    assert resp.status == 200, resp.text
    check(prompt_nulls_filled(resp.json), "/completions")


@pytest.mark.parametrize("usage", [False, True], ids=["no usage", "usage"])
@pytest.mark.parametrize("extra", [b for k, b in COMPLETION_BODIES.items()],
                         ids=COMPLETION_BODIES.keys())
async def test_completion_chunks(api: Api, extra: dict[str, Any], usage: bool) -> None:
    body = dict(extra)
    if usage:
        body["stream_options"] = {"include_usage": True}
    out = await api.stream("/v1/completions", body)
    assert out.status == 200, out.text
    assert out.events
    *chunks, last = out.events
    for event in chunks:
        check_completion_chunk(prompt_nulls_filled(event))
    if usage:  # the totals: a whole CreateCompletionResponse, no choices
        assert last["choices"] == [] and "usage" in last
        check(last, "/completions")
    else:
        check_completion_chunk(prompt_nulls_filled(last))
        assert last["choices"][0]["finish_reason"] is not None
        check(last, "/completions")  # a choice's last chunk is the plain shape


@pytest.mark.parametrize("fmt", ["float", "base64"])
async def test_embeddings(api: Api, fmt: str) -> None:
    resp = await api.post("/v1/embeddings", {"model": MODEL, "input": ["a b", "c"],
                                             "encoding_format": fmt})
    assert resp.status == 200, resp.text
    if fmt == "float":
        check(resp.json, "/embeddings")
    else:  # the schema describes the float form; the base64 one differs only there
        assert all(isinstance(d["embedding"], str) for d in resp.json["data"])
        check({**resp.json, "data": [{**d, "embedding": []} for d in resp.json["data"]]},
              "/embeddings")


async def test_models(api: Api) -> None:
    listed = await api.get("/v1/models")
    assert listed.status == 200, listed.text
    check(listed.json, "/models", "get")
    one = await api.get(f"/v1/models/{MODEL}")
    assert one.status == 200, one.text
    check(one.json, "/models/{model}", "get")


@pytest.mark.parametrize("request_args", [
    ("POST", "/v1/chat/completions", {"model": "nope", "messages": HELLO}),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": []}),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 0}),
    ("GET", "/v1/models/nope", None),
    ("GET", "/v1/nothing-here", None),
], ids=["unknown model", "no messages", "bad max_tokens", "unknown model id", "no route"])
async def test_errors(api: Api, request_args: tuple[str, str, Any]) -> None:
    method, path, body = request_args
    resp = await api.request(method, path, body)
    assert_error(resp, 404 if "nope" in str(body) + path or "nothing" in path else 400)
    check_error(resp.json)


def test_the_validator_refuses_off_spec_bodies() -> None:
    """The check itself bites: a body missing what the spec requires is refused."""
    good = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": "hi", "refusal": None}}]}
    check(good, "/chat/completions")
    no_refusal = {**good, "choices": [{**good["choices"][0],
                                       "message": {"role": "assistant", "content": "hi"}}]}
    with pytest.raises(AssertionError, match="refusal"):
        check(no_refusal, "/chat/completions")
    with pytest.raises(AssertionError, match="system_fingerprint"):
        check({**good, "system_fingerprint": None}, "/chat/completions")


async def test_system_fingerprint_is_stable_and_names_the_backend(api: Api) -> None:
    from serving.version import system_fingerprint

    first = await api.chat(messages=HELLO, max_tokens=2)
    second = await api.completion(prompt="Hi", max_tokens=2)
    fp = first.json["system_fingerprint"]
    assert fp.startswith("fp_") and second.json["system_fingerprint"] == fp
    core = api.engine.core
    assert fp == system_fingerprint(core.config.model, core.config.dtype, core.weights_kind)
    others = {system_fingerprint("other", "float32", "float32"),
              system_fingerprint(core.config.model, "bfloat16", "bfloat16"),
              system_fingerprint(core.config.model, core.config.dtype, "int8")}
    assert fp not in others and len(others) == 3


async def test_files(aiohttp_client: Any, engine: AsyncEngine, tiny_bert_dir: Path,
                     tmp_path: Path) -> None:
    """The file operations (retrieval's store): upload, list, get, delete."""
    api, closers = await make_state_api(aiohttp_client, engine, tiny_bert_dir,
                                        data_dir=tmp_path / "data")
    try:
        up = await post_form(api, "/v1/files", ("doc.txt", DOC))
        assert up.status == 200, up.text
        check(up.json, "/files")
        listed = await api.get("/v1/files")
        assert [f["id"] for f in listed.json["data"]] == [up.json["id"]]
        check(listed.json, "/files", "get")
        one = await api.get(f"/v1/files/{up.json['id']}")
        check(one.json, "/files/{file_id}", "get")
        gone = await api.request("DELETE", f"/v1/files/{up.json['id']}")
        assert gone.status == 200, gone.text
        check(gone.json, "/files/{file_id}", "delete")
    finally:
        await close_all(closers)
