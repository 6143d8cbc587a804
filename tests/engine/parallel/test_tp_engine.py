"""TP=2 (a spawned gloo worker) against TP=1 on the tiny checkpoints: MHA untied
(llama2) and GQA tied with llama3 rope scaling (llama31). Same logits within 1e-5, the same
greedy and seeded tokens (and logprobs), also when a small KV cache forces preemption,
prompts share a prefix and n-gram drafts are verified, and the same pooled embeddings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch

from engine import LLM, SamplingParams
from engine.worker.kv_budget import kv_bytes_per_token
from engine.worker.model_runner import SequenceChunk

BLOCK = 16
NUM_BLOCKS = 12  # 8 sequences of up to ~60 tokens need ~32: preemption is certain
SHARED = list(range(40, 72))  # two full blocks every prompt starts with: prefix-cache hits
PROMPTS = [SHARED + list(range(100 + i, 100 + i + 3 * i + 1)) for i in range(8)]
LOGIT_PROMPT = [5, 17, 99, 3, 250, 8, 8, 41, 77, 12, 300, 2, 64, 19, 23, 7, 180, 33, 90, 1]


@dataclass
class Pair:
    ref: LLM
    tp: LLM
    ref_logits: torch.Tensor
    tp_logits: torch.Tensor


def every_logit(llm: LLM) -> torch.Tensor:
    """Float32 logits of every position of LOGIT_PROMPT, run as one step on a fresh engine
    (blocks 0-1 are free: nothing ran yet); through the driver when there are workers."""
    core = llm.llm_engine.core
    chunk = [SequenceChunk(LOGIT_PROMPT, 0, [0, 1], all_logits=True)]
    if core.tp is None:
        return core.runner.execute(chunk)
    return core.tp.run_step(core.runner, [], chunk).logits


@pytest.fixture(scope="module", params=["llama2", "llama31"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Pair]:
    from tests.conftest import make_tiny_llama

    path = str(make_tiny_llama(tmp_path_factory.mktemp(f"tp-{request.param}"), request.param))
    ref = LLM(path, kv_cache_bytes=1 << 20, block_size=BLOCK)  # only to read the shape
    per_block = kv_bytes_per_token(ref.model_config, torch.float32) * BLOCK
    ref.close()
    # n-gram speculation on: drafts are verified as all_logits chunks on every rank.
    ref = LLM(path, kv_cache_bytes=NUM_BLOCKS * per_block, block_size=BLOCK,
              speculative_ngram=4)
    # kv_cache_bytes is per rank, and a rank holds half the KV heads: the same block count.
    tp = LLM(path, kv_cache_bytes=NUM_BLOCKS * per_block // 2, block_size=BLOCK,
             speculative_ngram=4, tensor_parallel_size=2)
    try:
        yield Pair(ref, tp, every_logit(ref), every_logit(tp))
    finally:
        tp.close()


def test_logits_match_tp1(pair: Pair) -> None:
    assert pair.tp_logits.shape == pair.ref_logits.shape == (len(LOGIT_PROMPT), 320)
    torch.testing.assert_close(pair.tp_logits, pair.ref_logits, rtol=0, atol=1e-5)


def test_batched_greedy_and_seeded_tokens_match_through_preemption(pair: Pair) -> None:
    greedy = SamplingParams(max_tokens=32, temperature=0, ignore_eos=True)
    seeded = [SamplingParams(max_tokens=32, temperature=0.9, seed=i, ignore_eos=True,
                             logprobs=2, prompt_logprobs=2 if i % 2 else None)
              for i in range(len(PROMPTS))]
    got, want = {}, {}
    for name, llm, out in (("tp", pair.tp, got), ("ref", pair.ref, want)):
        before = llm.llm_engine.core.snapshot()
        out["greedy"] = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, greedy)]
        outs = llm.generate(PROMPTS, seeded)
        out["seeded"] = [o.outputs[0].token_ids for o in outs]
        out["logprobs"] = [(o.prompt_logprobs, o.outputs[0].logprobs) for o in outs]
        after = llm.llm_engine.core.snapshot()
        assert after.kv_blocks == NUM_BLOCKS, name
        assert after.num_preemptions > before.num_preemptions, name
        assert after.cached_prompt_tokens > before.cached_prompt_tokens, name
        assert after.spec_draft_tokens > before.spec_draft_tokens, name
    assert all(len(t) == 32 for t in got["greedy"])
    assert got["greedy"] == want["greedy"] and got["seeded"] == want["seeded"]
    for (tp_prompt, tp_out), (ref_prompt, ref_out) in zip(got["logprobs"], want["logprobs"],
                                                          strict=True):
        assert (tp_prompt is None) == (ref_prompt is None)
        pairs = list(zip(tp_out, ref_out, strict=True))
        if tp_prompt is not None:
            pairs += list(zip(tp_prompt[1:], ref_prompt[1:], strict=True))
        assert pairs
        for a, b in pairs:  # the same tokens, logprobs within float32 noise
            assert a.rank == b.rank
            assert [t.token_id for t in [a.chosen, *a.top]] == [t.token_id for t in [b.chosen, *b.top]]
            for x, y in zip([a.chosen, *a.top], [b.chosen, *b.top], strict=True):
                assert abs(x.logprob - y.logprob) < 1e-4


def test_pooled_embeddings_match_tp1(pair: Pair) -> None:
    texts = ["The capital of France is Paris.", "def f(x): return x * 2"]
    got = torch.tensor([e.embedding for e in pair.tp.embed(texts)])
    want = torch.tensor([e.embedding for e in pair.ref.embed(texts)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)



def test_rank0_of_the_running_engine_holds_half_the_weights(pair: Pair) -> None:
    def sizes(llm: LLM) -> tuple[int, int]:
        params = list(llm.llm_engine.core.runner.model.named_parameters())
        total = sum(p.numel() * p.element_size() for _, p in params)
        norms = sum(p.numel() * p.element_size() for n, p in params if n.endswith("norm.weight"))
        return total, norms

    (tp_total, norms), (ref_total, _) = sizes(pair.tp), sizes(pair.ref)
    assert tp_total - norms == (ref_total - norms) // 2
    # And half the KV cache: its KV heads only.
    tp_kv = pair.tp.llm_engine.core.runner.kv_caches[0][0]
    ref_kv = pair.ref.llm_engine.core.runner.kv_caches[0][0]
    assert tp_kv.shape[2] * 2 == ref_kv.shape[2] and tp_kv.shape[0] == ref_kv.shape[0]
