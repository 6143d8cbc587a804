"""Continuous batching end to end on a tiny random Llama: batching changes nothing."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import torch

from engine import LLM, SamplingParams
from engine.engine_core import EngineCore
from engine.worker.kv_budget import kv_bytes_per_token

NUM_REQUESTS = 24


@pytest.fixture(scope="module")
def workload() -> tuple[list[list[int]], list[SamplingParams]]:
    rng = random.Random(7)
    prompts = [[rng.randrange(3, 320) for _ in range(rng.randint(1, 70))] for _ in range(NUM_REQUESTS)]
    params = [SamplingParams(temperature=0, max_tokens=rng.randint(1, 40), ignore_eos=True)
              for _ in prompts]
    return prompts, params


@pytest.fixture(scope="module")
def alone(tiny_llama: Path, workload) -> list[list[int]]:
    """Each request run by itself: the reference."""
    llm = LLM(str(tiny_llama), max_num_seqs=1)
    prompts, params = workload
    return [llm.generate(p, sp)[0].outputs[0].token_ids for p, sp in zip(prompts, params, strict=True)]


def block_bytes(path: Path) -> int:
    """Bytes of one 16-token KV block of this float32 model."""
    llm = LLM(str(path), kv_cache_bytes=1 << 20)
    return 16 * kv_bytes_per_token(llm.model_config, torch.float32)


def run_together(path: Path, workload, **engine_args) -> tuple[list[list[int]], EngineCore]:
    llm = LLM(str(path), **engine_args)
    prompts, params = workload
    outs = llm.generate(prompts, params)
    return [o.outputs[0].token_ids for o in outs], llm.llm_engine.core


def test_batched_equals_alone(tiny_llama: Path, workload, alone) -> None:
    got, engine = run_together(tiny_llama, workload)
    assert got == alone
    assert engine.stats.steps < sum(len(t) for t in alone)  # really batched


def test_preemption_keeps_outputs(tiny_llama: Path, workload, alone) -> None:
    """A KV cache of 10 blocks (160 tokens) cannot hold the batch: preemption must happen."""
    got, engine = run_together(tiny_llama, workload, kv_cache_bytes=10 * block_bytes(tiny_llama))
    assert engine.block_manager.num_blocks == 10
    assert engine.scheduler.num_preemptions > 0
    assert got == alone
    assert engine.block_manager.num_free_blocks == 10


def test_chunked_prefill_keeps_outputs(tiny_llama: Path, workload, alone) -> None:
    got, engine = run_together(tiny_llama, workload, max_num_batched_tokens=8)
    assert got == alone
    # Prompts up to 70 tokens under an 8-token budget: every long prompt took several steps.
    assert engine.stats.steps > max(len(p) for p in workload[0]) // 8


def test_prefix_cache_computes_only_new_tokens(tiny_llama: Path) -> None:
    llm = LLM(str(tiny_llama))
    engine = llm.llm_engine.core
    prefix = [(i * 37) % 300 + 3 for i in range(64)]  # 4 full blocks of 16
    params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    first = llm.generate(prefix + [11, 12, 13], params)[0]
    before = engine.stats.computed_tokens
    second = llm.generate(prefix + [21, 22], params)[0]
    computed = engine.stats.computed_tokens - before
    assert second.num_cached_tokens == 64
    assert computed == 2 + 4  # the two new prompt tokens, then 4 decode steps
    fresh = LLM(str(tiny_llama), enable_prefix_caching=False)
    assert fresh.generate(prefix + [21, 22], params)[0].outputs[0].token_ids == second.outputs[0].token_ids
    assert first.num_cached_tokens == 0


def test_full_prefix_hit_recomputes_last_token(tiny_llama: Path) -> None:
    llm = LLM(str(tiny_llama))
    prompt = [(i * 13) % 300 + 3 for i in range(32)]  # exactly 2 blocks
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    a = llm.generate(prompt, params)[0]
    b = llm.generate(prompt, params)[0]
    assert b.num_cached_tokens == 31
    assert a.outputs[0].token_ids == b.outputs[0].token_ids


def test_parallel_samples_share_prompt_and_differ(tiny_llama: Path) -> None:
    llm = LLM(str(tiny_llama))
    prompt = [5, 9, 13, 17, 21, 25, 29, 33, 37, 41]
    params = SamplingParams(temperature=1.0, n=4, max_tokens=12, seed=3, ignore_eos=True)
    before = llm.llm_engine.core.stats.computed_tokens
    out = llm.generate(prompt, params)[0]
    assert len(out.outputs) == 4
    assert len({tuple(o.token_ids) for o in out.outputs}) > 1
    # The prompt was computed once; each sample then decoded its own 11 further tokens.
    assert llm.llm_engine.core.stats.computed_tokens - before == len(prompt) + 4 * 11
    again = llm.generate(prompt, params)[0]
    assert [o.token_ids for o in again.outputs] == [o.token_ids for o in out.outputs]
    assert llm.llm_engine.core.block_manager.num_free_blocks == llm.llm_engine.core.block_manager.num_blocks


def test_best_of_returns_most_likely(tiny_llama: Path) -> None:
    llm = LLM(str(tiny_llama))
    prompt = [7, 8, 9, 10]
    params = SamplingParams(temperature=1.0, n=2, best_of=5, max_tokens=6, seed=1,
                            ignore_eos=True, logprobs=0)
    out = llm.generate(prompt, params)[0]
    assert len(out.outputs) == 2
    all5 = llm.generate(prompt, SamplingParams(temperature=1.0, n=5, max_tokens=6, seed=1,
                                               ignore_eos=True, logprobs=0))[0]
    best = sorted((o.cumulative_logprob for o in all5.outputs), reverse=True)[:2]
    assert [o.cumulative_logprob for o in out.outputs] == pytest.approx(best)


def test_seeded_sampling_ignores_batch_company(tiny_llama: Path, workload) -> None:
    llm = LLM(str(tiny_llama))
    seeded = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=16, seed=42, ignore_eos=True)
    alone = llm.generate([50, 60, 70], seeded)[0].outputs[0].token_ids
    prompts = [[50, 60, 70], *workload[0][:8]]
    params = [seeded] + [SamplingParams(temperature=1.0, max_tokens=16)] * 8
    together = llm.generate(prompts, params)[0].outputs[0].token_ids
    assert together == alone


def test_abort_at_each_stage_frees_blocks(tiny_llama: Path) -> None:
    llm = LLM(str(tiny_llama), max_num_batched_tokens=16, max_num_seqs=3)
    engine = llm.llm_engine
    core = engine.core
    bm = core.block_manager
    start = bm.num_free_blocks
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    for request_id, ids, p in [
        ("decoding", list(range(3, 20)), params),
        ("prefilling", list(range(3, 60)), params),
        ("forked", list(range(3, 12)), SamplingParams(n=3, max_tokens=30)),
        ("waiting", list(range(3, 10)), params),  # FCFS: behind "forked"
    ]:
        engine.add_request(request_id, engine.validate(ids, p))
    for _ in range(3):
        engine.step()
    stages = {r.request_id: r.seqs[0].status.value for r in core.requests.values()}
    assert stages["waiting"] == "waiting"
    prefilling = core.requests["prefilling"].seqs[0]
    assert 0 < prefilling.num_computed_tokens < prefilling.num_tokens
    assert core.requests["decoding"].seqs[0].output_token_ids
    for request_id in ["decoding", "prefilling", "waiting"]:
        out = engine.abort(request_id)
        assert out is not None and out.finished
        assert out.outputs[0].finish_reason == "abort"
    while core.requests["forked"].forked is False:
        engine.step()
    assert bm.num_free_blocks < start
    out = engine.abort("forked")
    assert out is not None and [o.finish_reason for o in out.outputs] == ["abort"] * 3
    assert not engine.has_unfinished()
    assert bm.num_free_blocks == start
    bm.check_invariants([])


def test_max_model_len_is_capped_to_what_the_cache_holds(
        tiny_llama: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 4-block cache (64 tokens) cannot hold one sequence of the model's 256: the context
    is capped to 64 and the cap is logged, so no sequence can outgrow the cache and be cut
    short by it. A request for more runs to the end of that context, beside a short one."""
    with caplog.at_level(logging.WARNING, logger="engine.engine_core"):
        llm = LLM(str(tiny_llama), kv_cache_bytes=4 * block_bytes(tiny_llama))
    assert llm.llm_engine.core.max_model_len == 64
    assert "max_model_len capped from 256 to 64" in caplog.text
    long_params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
    short_params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    long, short = llm.generate([list(range(3, 13)), [7, 8, 9]], [long_params, short_params])
    assert long.outputs[0].finish_reason == "length"
    assert len(long.outputs[0].token_ids) == 64 - 10  # the context is full, as advertised
    assert len(short.outputs[0].token_ids) == 5
    assert llm.llm_engine.core.block_manager.num_free_blocks == 4


def test_explicit_max_model_len_the_cache_cannot_hold_refuses_to_start(tiny_llama: Path) -> None:
    with pytest.raises(ValueError, match="max_model_len 256 does not fit the KV cache, which "
                                         "holds 64 tokens"):
        LLM(str(tiny_llama), max_model_len=256, kv_cache_bytes=4 * block_bytes(tiny_llama))
    llm = LLM(str(tiny_llama), max_model_len=64, kv_cache_bytes=4 * block_bytes(tiny_llama))
    assert llm.llm_engine.core.max_model_len == 64
