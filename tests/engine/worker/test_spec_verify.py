"""Verification of draft tokens: greedy keeps exactly what step-by-step greedy decoding makes;
sampling keeps the target distribution (checked against the exact one)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from engine.sampling_params import SamplingParams
from engine.worker.sampler import Sampler, SamplingMetadata
from engine.worker.spec_verify import DraftCheck, accept_greedy, accept_sampled, verify_drafts

EOS = frozenset({0})


def test_accept_greedy() -> None:
    assert accept_greedy([4, 5, 6], [4, 5]) == [4, 5, 6]  # all kept, then the bonus token
    assert accept_greedy([4, 9, 6], [4, 5]) == [4, 9]  # the model's token at the mismatch
    assert accept_greedy([7, 5, 6], [4, 5]) == [7]
    assert accept_greedy([3], []) == [3]


def frequencies(samples: list[tuple[int, ...]], position: int, given: tuple[int, ...] = ()
                ) -> tuple[dict[int, float], int]:
    """Empirical distribution of the token at `position` among runs that start with `given`
    and are long enough."""
    hits = [s[position] for s in samples if s[: len(given)] == given and len(s) > position]
    counts = Counter(hits)
    return {t: c / len(hits) for t, c in counts.items()}, len(hits)


def test_speculative_sampling_keeps_the_target_distribution() -> None:
    """Two drafts over a 4-token vocabulary: the first token is distributed as p0, the
    second (after the first draft was emitted) as p1, the third as p2; 20000 runs from a
    fixed seed, each probability within 0.025 (over 4 standard deviations)."""
    probs = torch.tensor([[0.1, 0.5, 0.3, 0.1],   # p0: the draft 1 has 0.5
                          [0.2, 0.2, 0.2, 0.4],   # p1: the draft 3 has 0.4
                          [0.7, 0.1, 0.1, 0.1]])  # p2: the bonus row
    drafts = [1, 3]
    gen = torch.Generator().manual_seed(0)
    runs = [tuple(accept_sampled(probs, drafts, gen)) for _ in range(20000)]
    for position, given in ((0, ()), (1, (1,)), (2, (1, 3))):
        freq, n = frequencies(runs, position, given)
        assert n > 3000
        for token in range(4):
            assert freq.get(token, 0.0) == pytest.approx(float(probs[position, token]), abs=0.025)
    # A rejected draft is never the token drawn in its place, and nothing follows it.
    for run in runs:
        for j, token in enumerate(run[:-1]):
            assert token == drafts[j]


def test_a_draft_holding_all_the_mass_is_kept() -> None:
    probs = torch.tensor([[0.0, 1.0 - 2**-24, 0.0], [0.0, 0.0, 1.0]])
    gen = torch.Generator().manual_seed(0)
    assert all(accept_sampled(probs, [1], gen) == [1, 2] for _ in range(200))


def step_by_step(logits: torch.Tensor, params: SamplingParams, prompt: list[int],
                 output: list[int], drafts: list[int]) -> tuple[list[int], list[float]]:
    """Plain decoding, one sampler call per row, stopping where it leaves the drafts."""
    sampler = Sampler(0)
    tokens: list[int] = []
    logprobs: list[float] = []
    for j in range(len(drafts) + 1):
        meta = SamplingMetadata([params], [prompt], [output + tokens], [None], EOS)
        out = sampler(logits[j : j + 1], meta)
        tokens.append(out.token_ids[0])
        logprobs.append(out.logprobs[0].logprob)
        if j == len(drafts) or tokens[-1] != drafts[j]:
            break
    return tokens, logprobs


@pytest.mark.parametrize("seed", range(6))
def test_greedy_verification_is_plain_greedy_with_every_processor(seed: int) -> None:
    """Penalties and min_tokens see the drafts before each row as output, exactly as
    step-by-step decoding would have."""
    rng = random.Random(seed)
    vocab, d = 12, 4
    torch.manual_seed(seed)
    logits = torch.randn(d + 1, vocab) * 2
    params = SamplingParams(temperature=0, frequency_penalty=1.5, presence_penalty=0.5,
                            repetition_penalty=1.3, min_tokens=3, logit_bias={5: 1.0},
                            logprobs=2)
    prompt, output = [3, 4, 5], [6]
    # The drafts follow plain greedy decoding up to a random point, then go wrong.
    greedy_run: list[int] = []
    for j in range(d):
        want, _ = step_by_step(logits[j:], params, prompt, output + greedy_run, [])
        greedy_run.append(want[0])
    cut = rng.randint(0, d)
    drafts = greedy_run[:cut] + [(t + 1) % vocab for t in greedy_run[cut:]]
    check = DraftCheck(params, prompt, [output + drafts[:j] for j in range(d + 1)], None,
                       drafts, first_row=0)
    (result,) = verify_drafts(logits, [check], EOS)
    expected, expected_logprobs = step_by_step(logits, params, prompt, output, drafts)
    assert result.token_ids == expected
    assert len(expected) == min(cut, d) + 1
    assert [e.logprob for e in result.logprobs] == pytest.approx(expected_logprobs)
    assert all(len(e.top) == 2 for e in result.logprobs)


def test_sampled_verification_draws_only_what_the_filters_allow() -> None:
    """top_k=2: a draft outside the two most likely tokens has probability 0, so it is
    always rejected and the token drawn instead is one of the two."""
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0]])
    params = SamplingParams(temperature=1.0, top_k=2)
    gen = torch.Generator().manual_seed(0)
    seen = Counter()
    for _ in range(300):
        check = DraftCheck(params, [1], [[], [3]], gen, [3], first_row=0)
        (result,) = verify_drafts(logits, [check], EOS)
        assert len(result.token_ids) == 1
        seen[result.token_ids[0]] += 1
    assert set(seen) == {0, 1}


def test_rows_of_several_sequences_are_kept_apart() -> None:
    logits = torch.full((5, 6), -5.0)
    for row, token in enumerate([2, 3, 4, 1, 5]):
        logits[row, token] = 5.0
    greedy = SamplingParams(temperature=0)
    a = DraftCheck(greedy, [1], [[], [2], [2, 3]], None, [2, 3], first_row=0)  # rows 0-2
    b = DraftCheck(greedy, [1], [[], [9]], None, [9], first_row=3)  # rows 3-4
    ra, rb = verify_drafts(logits, [a, b], EOS)
    assert ra.token_ids == [2, 3, 4] and rb.token_ids == [1]
    assert ra.logprobs is None


def test_a_check_needs_one_output_per_row() -> None:
    check = DraftCheck(SamplingParams(temperature=0), [1], [[]], None, [2], first_row=0)
    with pytest.raises(ValueError, match="one row output per draft"):
        verify_drafts(torch.zeros(2, 4), [check], EOS)
