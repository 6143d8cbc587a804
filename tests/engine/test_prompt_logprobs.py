"""Prompt logprobs (SamplingParams.prompt_logprobs) of a tiny random Llama equal
transformers' log-softmax at every prompt position: in one prefill, in small chunks, and
for a request whose prefix another request put in the prefix cache."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest
import torch

from engine import LLM, RequestOutput, SamplingParams
from engine.errors import InvalidRequest
from engine.worker.kv_budget import kv_bytes_per_token
from tests.conftest import make_tiny_llama

TOP_K = 3


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-plp"), "llama31")


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    rng = random.Random(3)
    shared = [rng.randrange(3, 320) for _ in range(40)]  # spans 2 full 16-token blocks
    return [shared + [rng.randrange(3, 320) for _ in range(9)],
            shared + [rng.randrange(3, 320) for _ in range(21)],
            [rng.randrange(3, 320) for _ in range(5)]]


@functools.cache
def hf_model(model: Path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(model, torch_dtype=torch.float32).eval()


def reference(model: Path, prompt: list[int]) -> torch.Tensor:
    """transformers' log_softmax at every position, float32."""
    with torch.no_grad():
        logits = hf_model(model)(torch.tensor([prompt])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def check(out: RequestOutput, expected: torch.Tensor, prompt: list[int]) -> None:
    plp = out.prompt_logprobs
    assert plp is not None and len(plp) == len(prompt)
    assert plp[0] is None
    for i in range(1, len(prompt)):
        row, entry = expected[i - 1], plp[i]
        assert entry.chosen.token_id == prompt[i]
        assert abs(entry.chosen.logprob - row[prompt[i]].item()) < 1e-4
        assert entry.rank == int((row > row[prompt[i]]).sum()) + 1
        vals, ids = row.topk(TOP_K)
        assert [t.token_id for t in entry.top] == ids.tolist()
        assert [t.logprob for t in entry.top] == pytest.approx(vals.tolist(), abs=1e-4)


def generate(model: Path, prompts: list[list[int]], **engine_args) -> tuple[list[RequestOutput], LLM]:
    llm = LLM(str(model), **engine_args)
    params = SamplingParams(temperature=0, max_tokens=3, prompt_logprobs=TOP_K)
    return [llm.generate(p, params)[0] for p in prompts], llm


@pytest.mark.parametrize("engine_args", [
    {}, {"max_num_batched_tokens": 7}, {"max_num_batched_tokens": 16}],
    ids=["one-prefill", "chunks-of-7", "chunks-of-16"])
def test_prompt_logprobs_match_transformers(model: Path, prompts, engine_args) -> None:
    outs, _ = generate(model, prompts, **engine_args)
    for out, prompt in zip(outs, prompts, strict=True):
        check(out, reference(model, prompt), prompt)


def test_prefix_cache_hit_still_gives_every_position(model: Path, prompts) -> None:
    """The second prompt shares 2 full blocks with the first: without prompt logprobs it
    would be a prefix-cache hit; with them it is computed in full, and still matches."""
    llm = LLM(str(model), enable_prefix_caching=True)
    plain = SamplingParams(temperature=0, max_tokens=1)
    llm.generate(prompts[0], plain)
    assert llm.generate(prompts[1], plain)[0].num_cached_tokens == 32  # the cache works
    asked = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=TOP_K)
    out = llm.generate(prompts[1], asked)[0]
    assert out.num_cached_tokens == 0
    check(out, reference(model, prompts[1]), prompts[1])


def test_zero_gives_only_the_prompt_token_and_off_gives_none(model: Path, prompts) -> None:
    llm = LLM(str(model))
    out = llm.generate(prompts[2], SamplingParams(max_tokens=2, prompt_logprobs=0))[0]
    assert [e.top for e in out.prompt_logprobs[1:]] == [[]] * 4
    assert [e.chosen.token_id for e in out.prompt_logprobs[1:]] == prompts[2][1:]
    assert llm.generate(prompts[2], SamplingParams(max_tokens=2))[0].prompt_logprobs is None
    one = llm.generate([prompts[2][0]], SamplingParams(max_tokens=2, prompt_logprobs=2))[0]
    assert one.prompt_logprobs == [None]


def test_with_parallel_samples_and_speculation(model: Path, prompts) -> None:
    """n > 1 and n-gram speculation leave the prompt's logprobs as they are."""
    llm = LLM(str(model), speculative_ngram=3, max_num_batched_tokens=16)
    params = SamplingParams(n=2, max_tokens=8, prompt_logprobs=TOP_K, seed=1)
    out = llm.generate(prompts[0], params)[0]
    assert len(out.outputs) == 2
    check(out, reference(model, prompts[0]), prompts[0])


@pytest.mark.parametrize("value", [-1, 21, 1.5, True])
def test_bad_values_are_rejected(value) -> None:
    with pytest.raises(InvalidRequest, match="prompt_logprobs"):
        SamplingParams(prompt_logprobs=value)


def test_preemption_during_prefill_keeps_every_position_once(model: Path, prompts) -> None:
    """A cache of 6 blocks cannot hold three growing sequences: some are preempted, in
    prefill or after it, and recompute; each prompt's logprobs still come once per position."""
    block = 16 * kv_bytes_per_token(LLM(str(model), kv_cache_bytes=1 << 20).model_config,
                                    torch.float32)
    llm = LLM(str(model), kv_cache_bytes=6 * block, max_num_batched_tokens=8)
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True,
                            prompt_logprobs=TOP_K)
    outs = llm.generate(prompts, params)
    assert llm.llm_engine.core.scheduler.num_preemptions > 0
    for out, prompt in zip(outs, prompts, strict=True):
        check(out, reference(model, prompt), prompt)
