"""The sampler against slow, obviously-correct pure-python versions of each transform."""

import math
import random
from collections import Counter

import pytest
import torch

from engine.sampling_params import SamplingParams
from engine.worker.sampler import (
    Sampler,
    SamplingMetadata,
    apply_penalties,
    filter_logits,
)

NEG_INF = float("-inf")
EOS = frozenset({0})


# ---- pure-python references, one row (a list of floats) at a time -------------------------


def ref_logit_bias(row: list[float], p: SamplingParams) -> list[float]:
    row = list(row)
    for tok, bias in (p.logit_bias or {}).items():
        row[tok] += bias
    return row


def ref_min_tokens(row: list[float], p: SamplingParams, out: list[int], eos: set[int]):
    row = list(row)
    if len(out) < p.min_tokens:
        for tok in eos | set(p.stop_token_ids):
            row[tok] = NEG_INF
    return row


def ref_repetition(row: list[float], p: SamplingParams, prompt: list[int], out: list[int]):
    row = list(row)
    for tok in set(prompt) | set(out):
        x = row[tok]
        row[tok] = x / p.repetition_penalty if x > 0 else x * p.repetition_penalty
    return row


def ref_presence_frequency(row: list[float], p: SamplingParams, out: list[int]):
    row = list(row)
    for tok, count in Counter(out).items():
        row[tok] -= p.presence_penalty + p.frequency_penalty * count
    return row


def ref_penalties(row, p, prompt, out, eos):
    row = ref_logit_bias(row, p)
    row = ref_min_tokens(row, p, out, eos)
    row = ref_repetition(row, p, prompt, out)
    return ref_presence_frequency(row, p, out)


def ref_softmax(row: list[float]) -> list[float]:
    m = max(row)
    exps = [math.exp(x - m) if x != NEG_INF else 0.0 for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def ref_top_k(row: list[float], k: int) -> list[float]:
    if k == 0:
        return list(row)
    kth = sorted(row, reverse=True)[min(k, len(row)) - 1]
    return [x if x >= kth else NEG_INF for x in row]


def ref_top_p(row: list[float], top_p: float) -> list[float]:
    if top_p >= 1.0:
        return list(row)
    probs = ref_softmax(row)
    order = sorted(range(len(row)), key=lambda i: -probs[i])
    keep, mass = set(), 0.0
    for i in order:
        if mass >= top_p:
            break
        keep.add(i)
        mass += probs[i]
    return [x if i in keep else NEG_INF for i, x in enumerate(row)]


def ref_min_p(row: list[float], min_p: float) -> list[float]:
    probs = ref_softmax(row)
    threshold = max(probs) * min_p
    return [x if pr >= threshold else NEG_INF for x, pr in zip(row, probs)]


def ref_filter(row: list[float], p: SamplingParams) -> list[float]:
    row = [x / p.temperature for x in row]
    return ref_min_p(ref_top_p(ref_top_k(row, p.top_k), p.top_p), p.min_p)


# ---- helpers --------------------------------------------------------------------------------


def make_meta(params, prompts=None, outputs=None, generators=None, eos=EOS):
    b = len(params)
    return SamplingMetadata(
        params=params,
        prompt_ids=prompts or [[] for _ in range(b)],
        output_ids=outputs or [[] for _ in range(b)],
        generators=generators or [None] * b,
        eos_token_ids=eos,
    )


def assert_rows_close(actual: torch.Tensor, expected: list[list[float]]) -> None:
    for got, want in zip(actual.tolist(), expected):
        assert [x == NEG_INF for x in got] == [x == NEG_INF for x in want]
        finite = [(g, w) for g, w in zip(got, want) if w != NEG_INF]
        assert all(math.isclose(g, w, rel_tol=1e-5, abs_tol=1e-5) for g, w in finite)


# ---- tests ----------------------------------------------------------------------------------


def test_penalties_match_reference() -> None:
    rng = random.Random(0)
    vocab = 40
    params = [
        SamplingParams(),
        SamplingParams(logit_bias={3: 5.0, 7: -100.0}),
        SamplingParams(repetition_penalty=1.3),
        SamplingParams(repetition_penalty=0.7, presence_penalty=0.5, frequency_penalty=-0.3),
        SamplingParams(min_tokens=4, stop_token_ids=[9], presence_penalty=1.0),
        SamplingParams(min_tokens=2, stop_token_ids=[9], logit_bias={"0": 1.5}),
    ]
    prompts = [[rng.randrange(vocab) for _ in range(rng.randrange(0, 12))] for _ in params]
    outputs = [[rng.randrange(vocab) for _ in range(rng.randrange(0, 6))] for _ in params]
    outputs[4], outputs[5] = [1, 1, 2], [4, 4, 4]
    logits = torch.randn(len(params), vocab, generator=torch.Generator().manual_seed(1)) * 3
    before = logits.clone()
    meta = make_meta(params, prompts, outputs, eos=frozenset({0, 1}))
    got = apply_penalties(logits, meta)
    expected = [
        ref_penalties(row, p, pr, out, {0, 1})
        for row, p, pr, out in zip(logits.tolist(), params, prompts, outputs)
    ]
    assert_rows_close(got, expected)
    assert torch.equal(logits, before)  # the caller's logits are not modified


@pytest.mark.parametrize("seed", range(4))
def test_filters_match_reference(seed: int) -> None:
    params = [
        SamplingParams(temperature=0.9),
        SamplingParams(temperature=0.5, top_k=5),
        SamplingParams(temperature=1.3, top_p=0.6),
        SamplingParams(temperature=0.8, min_p=0.2),
        SamplingParams(temperature=1.0, top_k=10, top_p=0.8, min_p=0.05),
        SamplingParams(temperature=2.0, top_k=100),
        SamplingParams(temperature=1.0, top_p=1e-6),
    ]
    logits = torch.randn(len(params), 30, generator=torch.Generator().manual_seed(seed)) * 2
    got = filter_logits(logits, params)
    expected = [ref_filter(row, p) for row, p in zip(logits.tolist(), params)]
    assert_rows_close(got, expected)
    assert int(torch.isfinite(got[-1]).sum()) == 1  # a tiny top_p keeps exactly one token


def test_greedy_rows_take_argmax_after_penalties() -> None:
    logits = torch.tensor([[1.0, 5.0, 4.0, 0.0], [1.0, 5.0, 4.0, 0.0], [1.0, 5.0, 4.0, 0.0]])
    params = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=0, repetition_penalty=2.0),  # 5/2 < 4
        SamplingParams(temperature=1.5, top_k=1, logit_bias={3: 10.0}),
    ]
    meta = make_meta(params, prompts=[[1], [1], []])
    assert Sampler(seed=0)(logits, meta).token_ids == [1, 2, 3]


def test_min_tokens_masks_eos_and_stop_ids() -> None:
    logits = torch.tensor([[9.0, 1.0, 8.0, 2.0]] * 3)
    params = [
        SamplingParams(temperature=0, min_tokens=3),
        SamplingParams(temperature=0, min_tokens=3, stop_token_ids=[2]),
        SamplingParams(temperature=0, min_tokens=3, stop_token_ids=[2]),
    ]
    meta = make_meta(params, outputs=[[5], [5, 5], [5, 5, 5]])
    assert Sampler()(logits, meta).token_ids == [2, 3, 0]


def test_sampling_follows_the_filtered_distribution() -> None:
    rows = 20000
    base = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -1.0])
    p = SamplingParams(temperature=0.8, top_k=5, top_p=0.9)
    meta = make_meta([p] * rows)
    tokens = Sampler(seed=123)(base.repeat(rows, 1), meta).token_ids
    want = ref_softmax(ref_filter(base.tolist(), p))
    counts = Counter(tokens)
    for tok, prob in enumerate(want):
        assert abs(counts[tok] / rows - prob) < 0.015, (tok, counts[tok] / rows, prob)


def _run_steps(sampler: Sampler, logits_rows, params, generators, steps: int) -> list[list[int]]:
    outputs = [[] for _ in params]
    for _ in range(steps):
        meta = make_meta(params, outputs=outputs, generators=generators)
        for row, tok in zip(outputs, sampler(logits_rows, meta).token_ids):
            row.append(tok)
    return outputs


def test_seeded_row_is_independent_of_the_batch() -> None:
    vocab = 50
    logits = torch.randn(4, vocab, generator=torch.Generator().manual_seed(5))
    seeded = SamplingParams(temperature=1.0, seed=1234, presence_penalty=0.5)
    alone = _run_steps(
        Sampler(), logits[:1], [seeded], [torch.Generator().manual_seed(1234)], steps=6
    )
    others = [SamplingParams(temperature=0.7), SamplingParams(temperature=0), SamplingParams()]
    mixed = _run_steps(
        Sampler(),
        torch.cat([logits[1:3], logits[:1], logits[3:]]),
        [others[0], others[1], seeded, others[2]],
        [None, None, torch.Generator().manual_seed(1234), None],
        steps=6,
    )
    assert mixed[2] == alone[0]
    assert len(set(alone[0])) > 1  # really sampled, not a degenerate argmax


def test_sampler_seed_makes_unseeded_rows_reproducible() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(9))
    params = [SamplingParams()] * 3
    first = _run_steps(Sampler(seed=7), logits, params, [None] * 3, steps=4)
    second = _run_steps(Sampler(seed=7), logits, params, [None] * 3, steps=4)
    assert first == second


def test_logprobs_come_from_raw_logits() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.5], [0.0, 4.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    params = [
        SamplingParams(temperature=0, logprobs=2, logit_bias={3: 50.0}),
        SamplingParams(temperature=0, logprobs=0),
        SamplingParams(temperature=0),
    ]
    out = Sampler()(logits, make_meta(params))
    assert out.token_ids == [3, 1, 3]
    raw = [[math.log(p) for p in ref_softmax(row)] for row in logits.tolist()]
    first = out.logprobs[0]
    assert first.token_id == 3 and math.isclose(first.logprob, raw[0][3], rel_tol=1e-5)
    assert [t for t, _ in first.top] == [0, 2]
    assert all(math.isclose(lp, raw[0][t], rel_tol=1e-5) for t, lp in first.top)
    assert out.logprobs[1].top == [] and math.isclose(
        out.logprobs[1].logprob, raw[1][1], rel_tol=1e-5
    )
    assert out.logprobs[2] is None


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="^output_ids"):
        SamplingMetadata([SamplingParams()], [[]], [], [None], EOS)
    with pytest.raises(ValueError, match="^logits"):
        Sampler()(torch.zeros(2, 5), make_meta([SamplingParams()]))
