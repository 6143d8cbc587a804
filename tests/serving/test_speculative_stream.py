"""A server whose engine speculates (--speculative-ngram): streams carry several tokens per
chunk and still add up to what plain decoding gives; /metrics counts the drafts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine import LLM, AsyncEngine, EngineConfig, SamplingParams
from tests.serving.conftest import MAX_LEN, MODEL, make_api, wait_idle


@pytest.fixture
async def spec_engine(repetitive_llama: Path) -> AsyncIterator[AsyncEngine]:
    eng = AsyncEngine(EngineConfig(str(repetitive_llama), max_model_len=MAX_LEN, speculative_ngram=4))
    yield eng
    await eng.shutdown()


PROMPT = [158, 55, 205, 248, 82, 49] * 2  # its greedy answer settles into loops


async def test_streamed_completion_with_speculation(aiohttp_client: Any, spec_engine: AsyncEngine,
                                                    repetitive_llama: Path) -> None:
    want = LLM(str(repetitive_llama), max_model_len=MAX_LEN).generate(
        [PROMPT], SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, logprobs=0))[0]
    api = await make_api(aiohttp_client, spec_engine)
    stream = await api.stream("/v1/completions", {
        "prompt": PROMPT, "max_tokens": 40, "temperature": 0, "ignore_eos": True,
        "logprobs": 0, "stream_options": {"include_usage": True}})
    assert stream.status == 200
    choices = [c for ev in stream.events for c in ev["choices"]]
    assert "".join(c["text"] for c in choices) == want.outputs[0].text
    tokens_per_chunk = [len(c["logprobs"]["tokens"]) for c in choices if c["logprobs"]]
    assert sum(tokens_per_chunk) == 40 and max(tokens_per_chunk) > 1
    assert stream.events[-1]["usage"]["completion_tokens"] == 40
    await wait_idle(spec_engine)
    metrics = (await api.get("/metrics")).text
    accepted = next(line for line in metrics.splitlines()
                    if line.startswith(f'engine_spec_decode_accepted_tokens{{model="{MODEL}"}}'))
    assert float(accepted.rsplit(" ", 1)[1]) == spec_engine.stats().spec_accepted_tokens > 0
    assert spec_engine.stats().kv_blocks_free == spec_engine.stats().kv_blocks
