"""The scheduler with n-gram speculation, over a simulated model (no torch): drafts are
budgeted, capped, given KV slots, and what the verification rejects goes back to the pool."""

from __future__ import annotations

import itertools
import random

import pytest

from engine.core.block_manager import BlockManager
from engine.core.request import Request, SequenceState, SequenceStatus
from engine.core.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from engine.sampling_params import SamplingParams

EOS_IDS = frozenset({0})
_ids = itertools.count()


def make_request(prompt: list[int], *, n: int = 1, max_tokens: int | None = 64,
                 **params) -> Request:
    sp = SamplingParams(n=n, max_tokens=max_tokens, ignore_eos=True, **params)
    req = Request(f"req-{next(_ids)}", list(prompt), sp)
    for i in range(n):
        req.seqs.append(SequenceState(next(_ids), req, i))
    return req


def make_scheduler(k: int = 4, *, num_blocks: int = 64, block_size: int = 4, budget: int = 64,
                   max_model_len: int = 1024, max_num_seqs: int = 8) -> Scheduler:
    bm = BlockManager(num_blocks, block_size)
    config = SchedulerConfig(max_model_len, max_num_seqs, budget, True, num_speculative_tokens=k)
    return Scheduler(config, bm)


LOOP = [5, 6, 7, 8, 9]


class LoopModel:
    """Continues LOOP from the current token (tokens outside it start it over); under
    `rng` it also rejects drafts at random, to exercise the rollback."""

    def __init__(self, s: Scheduler, rng: random.Random | None = None) -> None:
        self.s = s
        self.rng = rng

    @staticmethod
    def after(token: int) -> int:
        return LOOP[(LOOP.index(token) + 1) % len(LOOP)] if token in LOOP else LOOP[0]

    def sample(self, out: SchedulerOutput) -> dict[SequenceState, list[int]]:
        sampled: dict[SequenceState, list[int]] = {}
        for item in out.scheduled:
            seq = item.seq
            if item.draft_token_ids:
                tokens, prev = [], seq.tokens[seq.num_tokens - 1]
                for draft in item.draft_token_ids:
                    want = self.after(prev)
                    if self.rng is not None and self.rng.random() < 0.3:
                        want = 300 + self.rng.randrange(5)  # the model disagrees
                    tokens.append(want)
                    if want != draft:
                        break
                    prev = want
                else:
                    tokens.append(self.after(prev))
                sampled[seq] = tokens
            elif item.completes:
                count = 1 if seq.request.forked else seq.request.num_samples
                sampled[seq] = [self.after(seq.tokens[seq.num_tokens - 1])] * count
        return sampled

    def step(self) -> SchedulerOutput:
        out = self.s.schedule()
        self.s.update_from_output(out, self.sample(out), EOS_IDS)
        check(self.s)
        return out


def check(s: Scheduler) -> None:
    """Block ownership is exact, every table covers no more than its tokens need, and every
    block in the prefix cache holds real tokens of a sequence that owns it."""
    s.bm.check_invariants([seq.block_table for seq in s.running])
    for seq in s.running:
        assert len(seq.block_table) <= s.bm.blocks_for(seq.num_tokens)
        tokens = seq.all_token_ids
        bs = s.bm.block_size
        for i, block_id in enumerate(seq.block_table):
            block = s.bm.blocks[block_id]
            if block.key is not None:
                assert list(block.token_ids) == tokens[i * bs : (i + 1) * bs]


def run(s: Scheduler, model: LoopModel, max_steps: int = 500) -> list[SchedulerOutput]:
    outs = []
    while s.has_unfinished:
        outs.append(model.step())
        assert len(outs) < max_steps
    return outs


def test_drafts_are_verified_and_accepted_tokens_kept() -> None:
    s = make_scheduler(k=4)
    req = make_request([1, 2, *LOOP, *LOOP, 5], max_tokens=20)
    s.add_request(req)
    outs = run(s, LoopModel(s))
    seq = req.seqs[0]
    # The model continues the loop; so do the drafts: far fewer steps than tokens.
    assert seq.output_token_ids == [LOOP[(1 + i) % 5] for i in range(20)]
    assert len(outs) <= 1 + -(-19 // 5)
    draft_items = [i for o in outs for i in o.scheduled if i.draft_token_ids]
    assert draft_items and all(i.num_new_tokens == 1 + len(i.draft_token_ids) for i in draft_items)
    assert s.bm.num_free_blocks == s.bm.num_blocks


def test_rejected_drafts_give_their_blocks_back() -> None:
    s = make_scheduler(k=8, block_size=4)
    req = make_request([*LOOP, *LOOP, 5], max_tokens=40)  # 11 tokens: 3 blocks
    seq = req.seqs[0]
    s.add_request(req)
    model = LoopModel(s)
    model.step()  # the prompt, then its first token: 12 tokens
    out = s.schedule()
    (item,) = out.scheduled
    assert len(item.draft_token_ids) == 8
    assert len(seq.block_table) == s.bm.blocks_for(11 + 9)  # positions 11..19
    # The model disagrees with the first draft: one token, nothing accepted.
    s.update_from_output(out, {seq: [300]}, EOS_IDS)
    assert seq.num_computed_tokens == 12 and seq.num_tokens == 13
    assert len(seq.block_table) == s.bm.blocks_for(13)
    check(s)
    assert s.bm.num_free_blocks == s.bm.num_blocks - len(seq.block_table)


def test_random_rejections_keep_blocks_and_prefix_cache_exact() -> None:
    rng = random.Random(5)
    s = make_scheduler(k=5, num_blocks=40, block_size=4, budget=24, max_num_seqs=6)
    reqs = [make_request([rng.randrange(3, 12) for _ in range(rng.randint(2, 14))] + LOOP,
                         n=rng.choice([1, 1, 2]), max_tokens=rng.randint(1, 30))
            for _ in range(8)]
    for req in reqs:
        s.add_request(req)
    outs = run(s, LoopModel(s, rng))
    for out in outs:
        assert out.num_batched_tokens <= 24
    assert any(i.draft_token_ids for o in outs for i in o.scheduled)
    for req in reqs:
        for seq in req.seqs:
            assert len(seq.output_token_ids) == req.params.max_tokens
    assert s.bm.num_free_blocks == s.bm.num_blocks
    s.bm.check_invariants([])


def test_drafts_take_only_the_budget_left_over() -> None:
    s = make_scheduler(k=8, budget=6, max_num_seqs=4)
    reqs = [make_request([*LOOP, *LOOP, 5], max_tokens=200) for _ in range(3)]
    for req in reqs:
        s.add_request(req)
    model = LoopModel(s)
    while any(not r.seqs[0].output_token_ids for r in reqs):
        model.step()
    out = s.schedule()
    assert {item.seq for item in out.scheduled} == {r.seqs[0] for r in reqs}
    assert out.num_batched_tokens == 6
    counts = [len(i.draft_token_ids) for i in out.scheduled]
    assert sum(counts) == 3 and counts[0] > 0  # oldest first, each within its own limit


def test_drafts_never_delay_a_waiting_prompt() -> None:
    """A prompt waiting for budget gets what plain decoding would leave it."""
    s = make_scheduler(k=8, budget=8)
    first = make_request([*LOOP, *LOOP, 5], max_tokens=200)
    s.add_request(first)
    model = LoopModel(s)
    model.step()
    model.step()
    second = make_request(list(range(20, 40)), max_tokens=5)
    s.add_request(second)
    out = model.step()
    assert [(i.seq, i.num_new_tokens) for i in out.scheduled] == [
        (first.seqs[0], 1), (second.seqs[0], 7)]


def test_drafts_stop_at_max_tokens_and_the_context() -> None:
    s = make_scheduler(k=8)
    req = make_request([*LOOP, *LOOP, 5], max_tokens=4)
    s.add_request(req)
    model = LoopModel(s)
    model.step()  # 1 token out
    out = s.schedule()
    assert len(out.scheduled[0].draft_token_ids) == 4 - 1 - 1  # 2 drafts + 1 = 3 more tokens
    s.update_from_output(out, model.sample(out), EOS_IDS)
    assert req.seqs[0].status is SequenceStatus.FINISHED_LENGTH
    assert len(req.seqs[0].output_token_ids) == 4

    s = make_scheduler(k=8, max_model_len=14)
    req = make_request([*LOOP, *LOOP, 5], max_tokens=None)  # 11 prompt tokens
    s.add_request(req)
    model = LoopModel(s)
    model.step()  # 12 tokens
    out = s.schedule()
    assert len(out.scheduled[0].draft_token_ids) == 14 - 12 - 1
    s.update_from_output(out, model.sample(out), EOS_IDS)
    assert req.seqs[0].num_tokens == 14 and req.seqs[0].status is SequenceStatus.FINISHED_LENGTH


def test_a_stop_token_inside_the_drafts_ends_the_run_there() -> None:
    s = make_scheduler(k=4)
    req = make_request([*LOOP, *LOOP, 5], max_tokens=30, stop_token_ids=[8])
    seq = req.seqs[0]
    s.add_request(req)
    model = LoopModel(s)
    model.step()  # ... 5 -> 6
    out = s.schedule()
    assert out.scheduled[0].draft_token_ids == [7, 8, 9, 5]
    s.update_from_output(out, model.sample(out), EOS_IDS)  # the model says 7 8 9 5 6
    assert seq.output_token_ids == [6, 7, 8]
    assert seq.status is SequenceStatus.FINISHED_STOPPED and seq.stop_reason == 8
    assert out.scheduled[0].num_emitted == 2
    assert s.bm.num_free_blocks == s.bm.num_blocks


def test_no_drafts_for_guided_sequences_or_when_off() -> None:
    for k, grammar in ((4, object()), (0, None)):
        s = make_scheduler(k=k)
        req = make_request([*LOOP, *LOOP, 5], max_tokens=10)
        req.seqs[0].grammar = grammar
        s.add_request(req)
        model = LoopModel(s)
        outs = [model.step() for _ in range(3)]
        assert not any(i.draft_token_ids for o in outs for i in o.scheduled)


def test_drafts_never_preempt() -> None:
    """Drafts take blocks only when one stays free for each later running sequence; else
    the sequence decodes plainly."""
    s = make_scheduler(k=8, num_blocks=8, block_size=4)
    a = make_request([*LOOP, *LOOP, 5], max_tokens=12)  # 11 tokens: 3 blocks
    b = make_request([*LOOP, 5, 6, 7, 8, 9, 5], max_tokens=12)  # 11 tokens: 3 blocks
    s.add_request(a)
    s.add_request(b)
    model = LoopModel(s)
    model.step()
    assert s.bm.num_free_blocks == 2
    out = s.schedule()
    first = out.scheduled[0]
    assert first.seq is a.seqs[0]
    # 8 drafts would need 2 more blocks and leave none for b: a decodes plainly.
    assert first.draft_token_ids == [] and out.preempted == []
    assert [i.seq for i in out.scheduled] == [a.seqs[0], b.seqs[0]]


def test_config_refuses_negative_speculation() -> None:
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        SchedulerConfig(16, num_speculative_tokens=-1)


def test_draft_length_follows_acceptance() -> None:
    """Twice as many drafts after a full acceptance (up to K), one more than were accepted
    otherwise."""
    s = make_scheduler(k=8)
    req = make_request([1, 2, 3, 4, 1, 2, 9, 9, 1], max_tokens=200)
    seq = req.seqs[0]
    s.add_request(req)
    replies = [[2],  # the prompt; "1 2" now drafts what followed it last time
               [9, 9, 1, 2, 3],  # 4 of 8 accepted, then the model's 3: next at most 5
               [4, 1, 2, 9, 9, 1],  # all 5 accepted, and one more: next at most 10 -> 8
               [7]]  # the first draft is wrong: next at most 1
    drafts = []
    for reply in replies:
        out = s.schedule()
        drafts.append(out.scheduled[0].draft_token_ids)
        s.update_from_output(out, {seq: reply}, EOS_IDS)
        check(s)
    assert drafts[0] == []  # the prompt's step
    assert drafts[1] == [9, 9, 1, 2, 9, 9, 1, 2]
    assert drafts[2] == [4, 1, 2, 9, 9]
    assert len(drafts[3]) == 8 and seq.draft_limit == 1
