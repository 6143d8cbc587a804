"""Speculative decoding by prompt lookup, end to end on tiny Llamas: greedy output is the
same as without it, drafts really get accepted, limits hold and every block comes back."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from engine import LLM, EngineConfig, SamplingParams
from engine.engine_core import EngineCore
from engine.worker.kv_budget import kv_bytes_per_token

K = 4


def repeating_prompts(seed: int, count: int) -> list[list[int]]:
    """Prompts that repeat a span (so drafts exist from the start), and random ones."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        span = [rng.randrange(3, 320) for _ in range(rng.randint(3, 12))]
        out.append(span * rng.randint(2, 4) if i % 2 == 0 else
                   [rng.randrange(3, 320) for _ in range(rng.randint(1, 40))])
    return out


def greedy(max_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, **kw)


def token_ids(llm: LLM, prompts, params) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params)]


def assert_all_blocks_free(core: EngineCore) -> None:
    bm = core.block_manager
    assert bm.num_free_blocks == bm.num_blocks
    bm.check_invariants([])


@pytest.fixture(scope="module")
def plain(repetitive_llama: Path) -> LLM:
    return LLM(str(repetitive_llama))


@pytest.fixture(scope="module")
def spec(repetitive_llama: Path) -> LLM:
    return LLM(str(repetitive_llama), speculative_ngram=K)


def test_config_checks_speculative_ngram() -> None:
    for bad in (-1, 1.5, True, "4"):
        with pytest.raises(ValueError, match="speculative_ngram"):
            EngineConfig("m", speculative_ngram=bad)
    assert EngineConfig("m", speculative_ngram=0).speculative_ngram == 0


def test_greedy_is_unchanged_on_a_random_model(tiny_llama: Path) -> None:
    """A random model rarely repeats itself: most drafts are rejected, which must cost
    nothing but time."""
    prompts = repeating_prompts(1, 8)
    params = [greedy(random.Random(i).randint(1, 40)) for i in range(8)]
    expected = token_ids(LLM(str(tiny_llama)), prompts, params)
    llm = LLM(str(tiny_llama), speculative_ngram=K)
    assert token_ids(llm, prompts, params) == expected
    stats = llm.llm_engine.core.stats
    assert stats.spec_draft_tokens > stats.spec_accepted_tokens
    assert_all_blocks_free(llm.llm_engine.core)


def test_greedy_is_unchanged_and_drafts_are_accepted(plain: LLM, spec: LLM) -> None:
    prompts = repeating_prompts(2, 10)
    params = [greedy(random.Random(i).randint(1, 60)) for i in range(10)]
    expected = token_ids(plain, prompts, params)
    core = spec.llm_engine.core
    before = core.snapshot()
    assert token_ids(spec, prompts, params) == expected
    after = core.snapshot()
    accepted = after.spec_accepted_tokens - before.spec_accepted_tokens
    proposed = after.spec_draft_tokens - before.spec_draft_tokens
    generated = after.generated_tokens - before.generated_tokens
    assert generated == sum(len(e) for e in expected)
    assert accepted > generated // 3 and proposed >= accepted
    assert after.spec_acceptance_rate == after.spec_accepted_tokens / after.spec_draft_tokens
    # Fewer steps than tokens per sequence: accepted drafts came several per step.
    assert after.steps - before.steps < max(len(e) for e in expected)
    assert_all_blocks_free(core)


@pytest.mark.parametrize("engine_args", [
    {"max_num_batched_tokens": 8},  # drafts squeezed by the token budget
    {"kv_cache_bytes": "small"},  # preemption: drafts must not break recomputation
    {"enable_prefix_caching": False},
    {"max_num_seqs": 1},
])
def test_greedy_is_unchanged_under_pressure(repetitive_llama: Path, plain: LLM,
                                            engine_args: dict) -> None:
    prompts = repeating_prompts(3, 8)
    params = [greedy(random.Random(10 + i).randint(5, 50)) for i in range(8)]
    expected = token_ids(plain, prompts, params)
    if engine_args.get("kv_cache_bytes") == "small":  # 10 blocks of 16 tokens
        engine_args = {"kv_cache_bytes": 160 * kv_bytes_per_token(plain.model_config,
                                                                  torch.float32)}
    llm = LLM(str(repetitive_llama), speculative_ngram=K, **engine_args)
    assert token_ids(llm, prompts, params) == expected
    core = llm.llm_engine.core
    assert core.stats.spec_accepted_tokens > 0
    if "kv_cache_bytes" in engine_args:
        assert core.block_manager.num_blocks == 10 and core.scheduler.num_preemptions > 0
    assert_all_blocks_free(core)


def loop_reference(plain: LLM) -> tuple[list[int], list[int]]:
    """A prompt whose greedy output settles into a loop, and that output."""
    prompt = repeating_prompts(4, 1)[0]
    return prompt, token_ids(plain, [prompt], greedy(48))[0]


def test_stop_tokens_inside_accepted_drafts(plain: LLM, spec: LLM) -> None:
    """Each token of the output as a stop token: the output ends at its first occurrence,
    as without speculation, also where it sat among accepted drafts."""
    prompt, full = loop_reference(plain)
    core = spec.llm_engine.core
    for stop in list(dict.fromkeys(full))[:8]:
        params = greedy(48, stop_token_ids=[stop])
        out = spec.generate([prompt], params)[0].outputs[0]
        assert out.token_ids == full[: full.index(stop) + 1]
        assert (out.finish_reason, out.stop_reason) == ("stop", stop)
    assert core.stats.spec_accepted_tokens > 0
    assert_all_blocks_free(core)


def test_max_tokens_inside_accepted_drafts(plain: LLM, spec: LLM) -> None:
    prompt, full = loop_reference(plain)
    for n in (1, 2, 3, 7, 13):
        out = spec.generate([prompt], greedy(n))[0].outputs[0]
        assert out.token_ids == full[:n] and out.finish_reason == "length"


def test_stop_strings_inside_accepted_drafts(plain: LLM, spec: LLM) -> None:
    """A stop string completed by a token in the middle of a step's accepted run: text,
    tokens and logprobs end there, as without speculation (the core made more tokens).
    Stop strings of four output tokens: in the model's loops they first appear where drafts
    were accepted."""
    prompt, full = loop_reference(plain)
    tokenizer = plain.tokenizer
    core = spec.llm_engine.core
    cut_short = 0
    for cut in range(3, len(full)):
        stop = tokenizer.decode(full[cut - 3 : cut + 1])
        if not stop.strip():
            continue
        params = greedy(48, stop=[stop], logprobs=1)
        want = plain.generate([prompt], params)[0].outputs[0]
        before = core.stats.generated_tokens
        got = spec.generate([prompt], params)[0].outputs[0]
        assert (got.text, got.token_ids, got.finish_reason, got.stop_reason) == (
            want.text, want.token_ids, want.finish_reason, want.stop_reason)
        assert [p.chosen.logprob for p in got.logprobs] == pytest.approx(
            [p.chosen.logprob for p in want.logprobs], abs=1e-4)
        if want.finish_reason == "stop":
            cut_short += core.stats.generated_tokens - before > len(got.token_ids)
        if cut_short == 3:
            break
    assert cut_short == 3

def test_logprobs_and_penalties_match_plain_decoding(plain: LLM, spec: LLM) -> None:
    prompts = repeating_prompts(5, 4)
    params = greedy(30, logprobs=3, frequency_penalty=0.3, repetition_penalty=1.1,
                    min_tokens=5)
    want = plain.generate(prompts, params)
    got = spec.generate(prompts, params)
    for w, g in zip(want, got, strict=True):
        assert g.outputs[0].token_ids == w.outputs[0].token_ids
        assert g.outputs[0].cumulative_logprob == pytest.approx(w.outputs[0].cumulative_logprob,
                                                                abs=1e-3)
        assert [[t.token_id for t in p.top] for p in g.outputs[0].logprobs] == \
            [[t.token_id for t in p.top] for p in w.outputs[0].logprobs]


def test_prefix_cache_after_speculation_serves_only_real_tokens(plain: LLM, spec: LLM) -> None:
    """Blocks filled while verifying drafts are found by a later prompt that extends the
    first one's output; what it generates from them is what a fresh engine generates."""
    prompt, _ = loop_reference(plain)
    first = spec.generate([prompt], greedy(40))[0].outputs[0].token_ids
    follow = prompt + first + [7, 8]
    out = spec.generate([follow], greedy(12))[0]
    assert out.num_cached_tokens >= 32
    assert out.outputs[0].token_ids == token_ids(plain, [follow], greedy(12))[0]
    assert_all_blocks_free(spec.llm_engine.core)


def test_sampling_keeps_the_distribution(plain: LLM, spec: LLM) -> None:
    """600 samples of 5 tokens (temperature 0.2, inside the model's loop, where drafts are
    often right) with and without speculation: each position's token frequencies agree
    within a total variation of 0.1. Seeded, so the outcome is fixed; measured 0.06 at
    most, while accepting every draft (a wrong rule) gives 0.15-0.22."""
    prompt, full = loop_reference(plain)
    prompt = prompt + full[:12]
    core = spec.llm_engine.core
    before = core.snapshot()
    runs = {}
    params = [SamplingParams(temperature=0.2, max_tokens=5, n=50, seed=1000 * r,
                             ignore_eos=True) for r in range(12)]
    for name, llm in (("plain", plain), ("spec", spec)):
        outs = llm.generate([prompt] * len(params), params)
        runs[name] = [tuple(c.token_ids) for o in outs for c in o.outputs]
    after = core.snapshot()
    proposed = after.spec_draft_tokens - before.spec_draft_tokens
    accepted = after.spec_accepted_tokens - before.spec_accepted_tokens
    assert proposed > 500 and 0 < accepted < proposed
    for position in range(5):
        a = Counter(r[position] for r in runs["plain"])
        b = Counter(r[position] for r in runs["spec"])
        tv = sum(abs(a[t] - b[t]) for t in a | b) / 2 / len(runs["plain"])
        assert tv < 0.1, (position, a.most_common(5), b.most_common(5))
    # The same seed gives the same tokens again.
    again = spec.generate([prompt], params[0])[0]
    assert [tuple(c.token_ids) for c in again.outputs] == runs["spec"][:50]
    assert_all_blocks_free(core)
