"""The server as users run it (`python -m serving`), driven by the official `openai` SDK.

The session's server on the tiny random model (outputs compared with the offline engine), and
the one on the real SmolLM2 (marked slow) that must answer the API documents' examples.
(SIGTERM and the exit status: test_app's CLI test, and every shared server's teardown.)
"""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import openai
import pytest

from tests.serving.conftest import EOS_ID, HELLO, MAX_LEN, MODEL, Reference
from tests.serving.embedding_support import ENCODER
from tests.serving.servers import SMOL, Server, cache_prompt

# ---- models ------------------------------------------------------------------------------


def test_models_list_and_retrieve(tiny_server: Server) -> None:
    client = tiny_server.client()
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [MODEL, ENCODER]
    for m in models.data:
        assert m.object == "model"
        assert isinstance(m.created, int) and isinstance(m.owned_by, str)
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model"
    status, body = tiny_server.http("GET", "/v1/models")
    assert status == 200 and body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [MODEL, ENCODER]


def test_retrieve_unknown_model_raises_not_found(tiny_server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        tiny_server.client().models.retrieve("no-such-model")
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert "The model `no-such-model` does not exist" in str(info.value)


def test_health_needs_no_key(tiny_server: Server) -> None:
    with urllib.request.urlopen(f"{tiny_server.base}/health") as resp:
        assert resp.status == 200
    status, body = tiny_server.http("GET", "/v1/models", key=None)
    assert status == 401
    assert set(body["error"]) >= {"message", "type", "param", "code"}


# ---- chat and completions ----------------------------------------------------------------


def test_chat_create_matches_offline_engine(tiny_server: Server, ref: Reference) -> None:
    chat = tiny_server.client().chat.completions.create(
        model=MODEL, messages=HELLO, temperature=0, max_tokens=6)
    expected = ref.chat(HELLO, temperature=0, max_tokens=6)
    assert chat.object == "chat.completion"
    assert chat.model == MODEL
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == expected.outputs[0].text
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage is not None
    assert chat.usage.prompt_tokens == len(expected.prompt_token_ids)
    assert chat.usage.completion_tokens == 6


def test_chat_stream_through_the_sdk(tiny_server: Server, ref: Reference) -> None:
    stream = tiny_server.client().chat.completions.create(
        model=MODEL, messages=HELLO, temperature=0, max_tokens=6, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expected = ref.chat(HELLO, temperature=0, max_tokens=6)
    assert text == expected.outputs[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.prompt_tokens == len(expected.prompt_token_ids)


def test_completions_create_and_stream(tiny_server: Server, ref: Reference) -> None:
    client = tiny_server.client()
    prompt = "The capital of France is"
    expected = ref.generate(prompt, temperature=0, max_tokens=5).outputs[0].text
    done = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=5)
    assert done.object == "text_completion"
    assert done.choices[0].text == expected
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 5
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, temperature=0,
                                            max_tokens=5, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])


def test_prompt_logprobs_as_an_evaluation_harness_asks(tiny_server: Server,
                                                         ref: Reference) -> None:
    """lm-evaluation-harness's loglikelihood request: token ids, echo, logprobs,
    max_tokens 0; the answer is the prompt with its tokens' logprobs, the first null."""
    ids = ref.tokenizer.encode("The capital of France is Paris")
    want = ref.generate(ids, max_tokens=1, prompt_logprobs=1).prompt_logprobs
    done = tiny_server.client().completions.create(
        model=MODEL, prompt=ids, echo=True, logprobs=1, max_tokens=0, temperature=0)
    choice = done.choices[0]
    assert choice.text == ref.tokenizer.decode(ids) and choice.finish_reason == "length"
    lp = choice.logprobs
    assert lp is not None and len(lp.tokens) == len(ids)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[1:] == pytest.approx([p.chosen.logprob for p in want[1:]],
                                                  abs=1e-5)
    assert done.usage is not None and done.usage.completion_tokens == 0


def test_extra_parameters_through_extra_body(tiny_server: Server) -> None:
    chat = tiny_server.client().chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=4, logit_bias={str(EOS_ID): 100},
        extra_body={"ignore_eos": True, "top_k": 1})
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage is not None and chat.usage.completion_tokens == 4
    assert chat.choices[0].message.content == ""


def test_n_and_seed_through_the_sdk(tiny_server: Server, ref: Reference) -> None:
    chat = tiny_server.client().chat.completions.create(
        model=MODEL, messages=HELLO, n=2, seed=21, temperature=1.0, max_tokens=4)
    expected = ref.chat(HELLO, n=2, seed=21, temperature=1.0, max_tokens=4)
    assert [c.index for c in chat.choices] == [0, 1]
    assert [c.message.content for c in chat.choices] == [o.text for o in expected.outputs]


def test_async_client_concurrent_requests(tiny_server: Server, ref: Reference) -> None:
    convs = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(4)]

    async def main() -> tuple[list[str], str]:
        client = tiny_server.async_client()
        try:
            answers = await asyncio.gather(*(
                client.chat.completions.create(model=MODEL, messages=c, temperature=0,
                                               max_tokens=4) for c in convs))
            stream = await client.chat.completions.create(
                model=MODEL, messages=convs[0], temperature=0, max_tokens=4, stream=True)
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream
                                if c.choices])
        finally:
            await client.close()
        return [a.choices[0].message.content for a in answers], streamed

    answers, streamed = asyncio.run(main())
    expected = [ref.chat(c, temperature=0, max_tokens=4).outputs[0].text for c in convs]
    assert answers == expected
    assert streamed == expected[0]


# ---- errors as the SDK raises them -------------------------------------------------------


def test_sdk_raises_bad_request_with_param(tiny_server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        tiny_server.client().chat.completions.create(model=MODEL, messages=HELLO,
                                                     temperature=-1)
    assert info.value.status_code == 400
    assert info.value.type == "invalid_request_error"
    assert info.value.param == "temperature"


def test_sdk_raises_context_length_exceeded(tiny_server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        tiny_server.client().completions.create(model=MODEL, prompt=[5] * (MAX_LEN + 10),
                                                max_tokens=4)
    assert info.value.code == "context_length_exceeded"
    assert str(MAX_LEN) in str(info.value)


def test_sdk_raises_authentication_error(tiny_server: Server) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        tiny_server.client(key="sk-wrong").chat.completions.create(model=MODEL, messages=HELLO)
    assert info.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        tiny_server.client(key="sk-wrong").models.list()


def test_sdk_raises_not_found_for_unknown_model(tiny_server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        tiny_server.client().chat.completions.create(model="gpt-4o", messages=HELLO)
    assert info.value.code == "model_not_found"
    assert "The model `gpt-4o` does not exist" in str(info.value)
    with pytest.raises(openai.NotFoundError):
        tiny_server.client().completions.create(model="gpt-4o", prompt="hi")


def test_server_serves_after_errors(tiny_server: Server, ref: Reference) -> None:
    status, _ = tiny_server.http("POST", "/v1/chat/completions", {"model": MODEL})
    assert status == 400
    text = tiny_server.client().chat.completions.create(
        model=MODEL, messages=HELLO, temperature=0, max_tokens=3).choices[0].message.content
    assert text == ref.chat(HELLO, temperature=0, max_tokens=3).outputs[0].text


# ---- the real model: the API documents' examples -----------------------------------------


PARIS = [{"role": "user", "content": "What is the capital of France?"}]
LAMBDA_CHAT = [
    {"role": "system", "content": "You are a helpful assistant named Hermes, made by Nous Research."},
    {"role": "user", "content": "Who won the world series in 2020?"},
    {"role": "assistant", "content": "The Los Angeles Dodgers won the World Series in 2020."},
    {"role": "user", "content": "Where was it played?"},
]
LAMBDA_V1_CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Who won the world series in 2020?"},
]


def check_chat_shape(body: dict[str, Any]) -> str:
    assert isinstance(body["id"], str) and body["id"]
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == SMOL
    assert len(body["choices"]) == 1
    choice = body["choices"][0]
    assert choice["index"] == 0
    assert choice["finish_reason"] in ("stop", "length")
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert isinstance(content, str) and content.strip()
    assert "<|im_end|>" not in content and "<|im_start|>" not in content
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return content


@pytest.mark.slow
def test_smollm2_answers_paris(smol_server: Server) -> None:
    """Streamed and not, the same greedy answer (both from the same prefix-cache state)."""
    cache_prompt(smol_server, {"model": SMOL, "messages": PARIS})
    client = smol_server.client()
    chat = client.chat.completions.create(model=SMOL, messages=PARIS, temperature=0,
                                          max_tokens=32)
    answer = chat.choices[0].message.content
    assert answer is not None and "Paris" in answer
    stream = client.chat.completions.create(model=SMOL, messages=PARIS, temperature=0,
                                            max_tokens=32, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == answer


@pytest.mark.slow
def test_lambda_chat_example(smol_server: Server) -> None:
    status, body = smol_server.http("POST", "/v1/chat/completions",
                                    {"model": SMOL, "messages": LAMBDA_CHAT})
    assert status == 200, body
    check_chat_shape(body)


@pytest.mark.slow
def test_lambda_chat_example_through_the_sdk(smol_server: Server) -> None:
    """The document's Python example (the same conversation, through the official client)."""
    chat = smol_server.client().chat.completions.create(messages=LAMBDA_CHAT, model=SMOL)
    assert chat.object == "chat.completion" and chat.model == SMOL
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content
    assert chat.choices[0].finish_reason in ("stop", "length")
    assert chat.usage is not None and chat.usage.completion_tokens > 0


@pytest.mark.slow
def test_lambda_v1_chat_example(smol_server: Server) -> None:
    status, body = smol_server.http("POST", "/v1/chat/completions",
                                    {"model": SMOL, "messages": LAMBDA_V1_CHAT})
    assert status == 200, body
    check_chat_shape(body)


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["Computers are", "San Francisco is a"])
def test_lambda_completions_examples(smol_server: Server, prompt: str) -> None:
    status, body = smol_server.http("POST", "/v1/completions",
                                    {"model": SMOL, "prompt": prompt, "temperature": 0})
    assert status == 200, body
    assert isinstance(body["id"], str) and body["object"] == "text_completion"
    assert isinstance(body["created"], int) and body["model"] == SMOL
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] in ("stop", "length")
    assert isinstance(choice["text"], str) and choice["text"].strip()
    assert choice.get("logprobs") is None
    usage = body["usage"]
    assert 0 < usage["completion_tokens"] <= 16  # OpenAI's default max_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if prompt == "Computers are":  # the document's Python example too
        sdk = smol_server.client().completions.create(prompt=prompt, temperature=0, model=SMOL)
        assert sdk.choices[0].text == choice["text"]  # temperature 0: the same answer


@pytest.mark.slow
def test_lambda_models_example(smol_server: Server) -> None:
    status, body = smol_server.http("GET", "/v1/models")
    assert status == 200, body
    assert body["object"] == "list"
    entry = next(m for m in body["data"] if m["id"] == SMOL)
    assert entry["object"] == "model"
    assert isinstance(entry["created"], int) and isinstance(entry["owned_by"], str)
    assert [m.id for m in smol_server.client().models.list().data] == [m["id"] for m in body["data"]]
