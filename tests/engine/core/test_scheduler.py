"""The iteration-level scheduler over a small block pool, with a simulated model (no torch).

A step here is what EngineCore.step does minus the model: schedule, sample a token for every
sequence whose scheduled chunk reaches its last token (one per sample for a request's first
prompt), then update_from_output.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.block_manager import BlockManager
from engine.core.request import Request, SequenceState, SequenceStatus
from engine.core.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from engine.errors import InvalidRequest
from engine.sampling_params import SamplingParams

EOS = 0
EOS_IDS = frozenset({EOS})
WAITING, RUNNING = SequenceStatus.WAITING, SequenceStatus.RUNNING

_ids = itertools.count()


def make_request(prompt, *, n=1, best_of=None, max_tokens=16, **params) -> Request:
    """A request as EngineCore builds it: one SequenceState per sample, all still waiting."""
    sp = SamplingParams(n=n, best_of=best_of, max_tokens=max_tokens, **params)
    req = Request(f"req-{next(_ids)}", list(prompt), sp)
    for i in range(req.num_samples):
        req.seqs.append(SequenceState(next(_ids), req, i))
    return req


def make_scheduler(
    num_blocks=32,
    block_size=4,
    *,
    max_model_len=1024,
    max_num_seqs=8,
    budget=64,
    chunked=True,
    prefix=True,
) -> Scheduler:
    bm = BlockManager(num_blocks, block_size, enable_prefix_caching=prefix)
    return Scheduler(SchedulerConfig(max_model_len, max_num_seqs, budget, chunked), bm)


def prompt(length: int, start: int = 1) -> list[int]:
    return list(range(start, start + length))


class Model:
    """Hands out fresh token ids (never EOS unless asked) and steps the scheduler."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.s = scheduler
        self.next_token = itertools.count(1000)

    def sample(self, out: SchedulerOutput, forced=None) -> dict[SequenceState, list[int]]:
        sampled = {}
        for item in out.scheduled:
            if not item.completes:
                continue
            req = item.seq.request
            count = 1 if req.forked else req.num_samples
            if forced and item.seq in forced:
                sampled[item.seq] = list(forced[item.seq])
            else:
                sampled[item.seq] = [next(self.next_token) for _ in range(count)]
        return sampled

    def step(self, forced=None) -> tuple[SchedulerOutput, list[SequenceState]]:
        out = self.s.schedule()
        updated = self.s.update_from_output(out, self.sample(out, forced), EOS_IDS)
        self.s.bm.check_invariants([seq.block_table for seq in self.s.running])
        return out, updated


def chunks(out: SchedulerOutput) -> list[tuple[SequenceState, int, int]]:
    """(sequence, start position, new tokens) per scheduled item, read before the update."""
    return [(item.seq, item.start_pos, item.num_new_tokens) for item in out.scheduled]


def schedule(s: Scheduler) -> tuple[SchedulerOutput, list[tuple[SequenceState, int, int]]]:
    out = s.schedule()
    return out, chunks(out)


def assert_all_free(s: Scheduler) -> None:
    assert s.bm.num_free_blocks == s.bm.num_blocks
    assert all(b.ref_count == 0 for b in s.bm.blocks)
    s.bm.check_invariants([])


# ---- configuration and admission ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_model_len", "max_num_seqs", "max_num_batched_tokens"])
@pytest.mark.parametrize("value", [0, -1])
def test_config_rejects_non_positive_limits(field, value):
    kwargs = {"max_model_len": 16, field: value}
    with pytest.raises(ValueError, match=f"{field} must be positive"):
        SchedulerConfig(**kwargs)


def test_prompt_larger_than_the_cache_is_rejected_up_front():
    s = make_scheduler(num_blocks=4, block_size=4)  # 16 slots
    with pytest.raises(InvalidRequest, match=r"prompt has 16 tokens but the KV cache holds only 16") as e:
        s.check_admissible(16, 1, 1)  # no room for the token it must generate
    assert e.value.param == "prompt"
    with pytest.raises(InvalidRequest, match="KV cache holds only 16"):
        s.check_admissible(100, 1, 1)
    s.check_admissible(15, 1, 1)  # 15 + 1 generated token fit exactly


def test_prompt_over_budget_is_rejected_only_without_chunked_prefill():
    s = make_scheduler(budget=8, chunked=False)
    with pytest.raises(InvalidRequest, match=r"9 tokens, more than max_num_batched_tokens \(8\)"):
        s.check_admissible(9, 1, 1)
    s.check_admissible(8, 1, 1)
    make_scheduler(budget=8, chunked=True).check_admissible(9, 1, 1)


def test_more_samples_than_sequence_slots_are_rejected_up_front():
    s = make_scheduler(max_num_seqs=8)
    s.check_admissible(4, 8, 1)
    with pytest.raises(InvalidRequest, match="asks for 9 samples") as e:
        s.check_admissible(4, 9, 1)
    assert e.value.param == "n"


def test_add_request_queues_only_the_first_sample():
    s = make_scheduler()
    req = make_request(prompt(5), n=3)
    s.add_request(req)
    assert list(s.waiting) == [req.seqs[0]]
    assert s.has_unfinished


# ---- a single request --------------------------------------------------------------------


def test_single_request_lifecycle_frees_everything():
    s = make_scheduler(num_blocks=8, block_size=4)
    m = Model(s)
    req = make_request(prompt(10), max_tokens=3)
    seq = req.seqs[0]
    s.add_request(req)

    out, done = schedule(s)
    assert done == [(seq, 0, 10)]
    assert out.scheduled[0].completes
    assert out.blocks_to_copy == [] and out.preempted == []
    assert seq.status is RUNNING and len(seq.block_table) == 3
    updated = s.update_from_output(out, m.sample(out), EOS_IDS)
    assert updated == [seq]
    assert seq.num_computed_tokens == 10 and len(seq.output_token_ids) == 1

    out, done = schedule(s)
    assert done == [(seq, 10, 1)]  # a decode step: one token at position 10
    s.update_from_output(out, m.sample(out), EOS_IDS)
    _, updated = m.step()
    assert updated == [seq]
    assert seq.status is SequenceStatus.FINISHED_LENGTH
    assert len(seq.output_token_ids) == 3
    assert seq.block_table == [] and not s.running and not s.has_unfinished
    assert_all_free(s)


def test_eos_stops_a_sequence():
    s = make_scheduler()
    m = Model(s)
    req = make_request(prompt(3))
    s.add_request(req)
    seq = req.seqs[0]
    m.step(forced={seq: [EOS]})
    assert seq.status is SequenceStatus.FINISHED_STOPPED
    assert seq.stop_reason is None
    assert not s.running
    assert_all_free(s)


def test_stop_token_and_min_tokens():
    s = make_scheduler()
    m = Model(s)
    req = make_request(prompt(3), stop_token_ids=[7], min_tokens=2)
    s.add_request(req)
    seq = req.seqs[0]
    m.step(forced={seq: [7]})
    assert seq.status is RUNNING  # min_tokens holds the stop token back once
    m.step(forced={seq: [7]})
    assert seq.status is SequenceStatus.FINISHED_STOPPED
    assert seq.stop_reason == 7
    assert_all_free(s)


def test_max_model_len_ends_generation():
    s = make_scheduler(max_model_len=6)
    m = Model(s)
    req = make_request(prompt(4), max_tokens=None)
    s.add_request(req)
    seq = req.seqs[0]
    m.step()
    assert seq.status is RUNNING
    m.step()
    assert seq.num_tokens == 6
    assert seq.status is SequenceStatus.FINISHED_LENGTH
    assert_all_free(s)


# ---- chunked prefill and the token budget --------------------------------------------------


def test_long_prompt_is_split_into_chunks():
    s = make_scheduler(block_size=4, budget=8)
    m = Model(s)
    req = make_request(prompt(25))
    seq = req.seqs[0]
    s.add_request(req)
    seen = []
    for _ in range(4):
        out, done = schedule(s)
        seen.append((done[0][1], done[0][2], out.scheduled[0].completes, len(seq.block_table)))
        updated = s.update_from_output(out, m.sample(out), EOS_IDS)
        assert (updated == [seq]) == out.scheduled[0].completes
    assert seen == [(0, 8, False, 2), (8, 8, False, 4), (16, 8, False, 6), (24, 1, True, 7)]
    assert seq.num_computed_tokens == 25 and len(seq.output_token_ids) == 1


def test_chunked_prefill_shares_the_step_with_decodes():
    s = make_scheduler(block_size=4, budget=8)
    m = Model(s)
    a, b = make_request(prompt(4)), make_request(prompt(20, start=50))
    sa, sb = a.seqs[0], b.seqs[0]
    s.add_request(a)
    m.step()
    s.add_request(b)
    steps = []
    for _ in range(3):
        out, done = schedule(s)
        assert out.num_batched_tokens <= 8
        steps.append([(seq, n) for seq, _, n in done])
        s.update_from_output(out, m.sample(out), EOS_IDS)
    # The running decode goes first; the prompt takes what is left of the budget.
    assert steps == [[(sa, 1), (sb, 7)], [(sa, 1), (sb, 7)], [(sa, 1), (sb, 6)]]
    assert len(sb.output_token_ids) == 1 and len(sa.output_token_ids) == 4


def test_budget_is_shared_fcfs_and_last_admitted_gets_a_partial_chunk():
    s = make_scheduler(budget=10)
    m = Model(s)
    reqs = [make_request(prompt(4, start=10 * i)) for i in range(3)]
    for r in reqs:
        s.add_request(r)
    a, b, c = (r.seqs[0] for r in reqs)
    out, done = schedule(s)
    assert [(seq, start, n) for seq, start, n in done] == [(a, 0, 4), (b, 0, 4), (c, 0, 2)]
    assert out.num_batched_tokens == 10
    assert s.running == [a, b, c]
    s.update_from_output(out, m.sample(out), EOS_IDS)
    out, done = schedule(s)
    assert done == [(a, 4, 1), (b, 4, 1), (c, 2, 2)]


def test_running_sequences_can_use_the_whole_budget():
    s = make_scheduler(budget=3)
    m = Model(s)
    reqs = [make_request(prompt(2, start=10 * i)) for i in range(4)]
    for r in reqs[:3]:
        s.add_request(r)
    out, _ = m.step()
    assert [i.num_new_tokens for i in out.scheduled] == [2, 1]  # budget 3: 2 + 1
    s.add_request(reqs[3])
    out, done = schedule(s)
    # a decodes, b finishes its prompt, c starts its own with the last token of budget.
    assert [(seq, n) for seq, _, n in done] == [(r.seqs[0], 1) for r in reqs[:3]]
    assert reqs[3].seqs[0] in s.waiting  # no budget left to admit the newcomer


def test_without_chunked_prefill_a_prompt_waits_for_a_whole_budget_and_blocks_the_queue():
    s = make_scheduler(budget=10, chunked=False)
    m = Model(s)
    a, b, c = (make_request(prompt(k, start=20 * i)) for i, k in enumerate((6, 6, 2)))
    for r in (a, b, c):
        s.add_request(r)
    out, done = schedule(s)
    assert [(seq, n) for seq, _, n in done] == [(a.seqs[0], 6)]
    assert list(s.waiting) == [b.seqs[0], c.seqs[0]]  # c would fit, but FCFS holds it
    s.update_from_output(out, m.sample(out), EOS_IDS)
    out, done = schedule(s)
    assert [(seq, n) for seq, _, n in done] == [(a.seqs[0], 1), (b.seqs[0], 6), (c.seqs[0], 2)]


def test_max_num_seqs_caps_running_sequences():
    s = make_scheduler(max_num_seqs=2)
    m = Model(s)
    reqs = [make_request(prompt(2, start=10 * i), max_tokens=t) for i, t in enumerate((1, 5, 5))]
    for r in reqs:
        s.add_request(r)
    out, _ = m.step()
    assert [i.seq for i in out.scheduled] == [reqs[0].seqs[0], reqs[1].seqs[0]]
    assert reqs[0].finished  # max_tokens=1: done after its prompt
    out, done = schedule(s)
    assert [seq for seq, _, _ in done] == [reqs[1].seqs[0], reqs[2].seqs[0]]
    assert len(s.running) == 2


@pytest.mark.parametrize(("max_num_seqs", "admitted"), [(4, True), (3, False)])
def test_max_num_seqs_counts_every_sample_of_a_new_request(max_num_seqs, admitted):
    s = make_scheduler(max_num_seqs=max_num_seqs)
    m = Model(s)
    s.add_request(make_request(prompt(2)))
    m.step()
    req = make_request(prompt(2, start=50), n=3)
    s.add_request(req)
    out, _ = m.step()
    assert (req.seqs[0] in [i.seq for i in out.scheduled]) == admitted
    assert len(s.running) == (4 if admitted else 1)


def test_max_num_seqs_holds_after_a_chunked_leader_forks():
    s = make_scheduler(max_num_seqs=3, budget=4)
    m = Model(s)
    s.add_request(make_request(prompt(10), n=3))  # three slots, prompt over three steps
    s.add_request(make_request(prompt(2, start=50)))
    for _ in range(5):
        out, _ = m.step()
        assert len(out.scheduled) <= 3
        assert len(s.running) <= 3


def test_request_with_more_samples_than_max_num_seqs_never_exceeds_it():
    s = make_scheduler(max_num_seqs=2)
    m = Model(s)
    try:
        s.add_request(make_request(prompt(3), n=3))
    except ValueError:
        return  # rejecting it up front is fine too
    for _ in range(3):
        out, _ = m.step()
        assert len(out.scheduled) <= 2


# ---- preemption ------------------------------------------------------------------------------


def three_decoding(num_blocks=6, **kwargs):
    """Three 3-token prompts in 2-token blocks filling a 6-block pool, each with one output."""
    s = make_scheduler(num_blocks=num_blocks, block_size=2, prefix=False, **kwargs)
    m = Model(s)
    reqs = [make_request(prompt(3, start=10 * i), max_tokens=8) for i in range(3)]
    for r in reqs:
        s.add_request(r)
    m.step()  # prefills: 2 blocks each
    m.step()  # decodes at position 3, still in block 1
    assert s.bm.num_free_blocks == num_blocks - 6
    return s, m, [r.seqs[0] for r in reqs]


def test_newest_running_sequence_is_preempted_to_the_head_of_the_queue():
    s, m, (a, b, c) = three_decoding()
    late = make_request(prompt(1, start=90))
    s.add_request(late)
    outputs = list(c.output_token_ids)

    out, done = schedule(s)  # a and b each need a third block; none is free
    assert out.preempted == [c]
    assert [seq for seq, _, _ in done] == [a, b]
    assert list(s.waiting) == [c, late.seqs[0]]  # ahead of the request that never ran
    assert c.status is WAITING and c.num_computed_tokens == 0 and c.block_table == []
    assert c.output_token_ids == outputs  # outputs are kept, to be recomputed
    assert s.num_preemptions == 1
    assert s.running == [a, b]
    s.update_from_output(out, m.sample(out), EOS_IDS)
    s.bm.check_invariants([a.block_table, b.block_table])


def test_no_admission_in_a_step_that_preempted():
    s, m, (_, _, c) = three_decoding(num_blocks=7, budget=64)
    tiny = make_request(prompt(1, start=90))
    s.add_request(tiny)
    out, _ = m.step()  # a takes the spare block, b preempts c
    assert out.preempted == [c]
    assert tiny.seqs[0] not in [i.seq for i in out.scheduled]
    assert list(s.waiting) == [c, tiny.seqs[0]]
    assert s.bm.num_free_blocks == 1  # the tiny prompt would have fit


def test_several_preemptions_keep_arrival_order_and_may_preempt_the_scheduling_sequence():
    s = make_scheduler(num_blocks=8, block_size=2, prefix=False)
    m = Model(s)
    reqs = [make_request(prompt(3, start=10 * i)) for i in range(4)]
    for r in reqs:
        s.add_request(r)
    m.step()
    m.step()
    a, b, c, d = (r.seqs[0] for r in reqs)
    assert s.bm.num_free_blocks == 0
    out, done = schedule(s)
    # a preempts d and takes one of its blocks, b takes the other, c finds none and is then
    # the newest running sequence itself.
    assert out.preempted == [d, c]
    assert [seq for seq, _, _ in done] == [a, b]
    assert list(s.waiting) == [c, d]
    assert s.running == [a, b]
    assert s.num_preemptions == 2
    s.update_from_output(out, m.sample(out), EOS_IDS)
    s.bm.check_invariants([a.block_table, b.block_table])


def test_preempted_sequence_recomputes_prompt_and_outputs():
    s = make_scheduler(num_blocks=4, block_size=2, prefix=False)
    m = Model(s)
    a = make_request(prompt(3), max_tokens=3)
    b = make_request(prompt(3, start=20), max_tokens=5)
    s.add_request(a)
    s.add_request(b)
    sb = b.seqs[0]
    m.step()
    m.step()
    out, _ = m.step()  # a needs a third block: b is preempted; a finishes
    assert out.preempted == [sb]
    assert a.finished and not s.running
    assert sb.num_tokens == 5 and sb.num_computed_tokens == 0

    out, done = schedule(s)
    assert done == [(sb, 0, 5)]  # the whole prompt and both outputs again
    assert out.scheduled[0].completes
    before = sb.output_token_ids[:]
    updated = s.update_from_output(out, m.sample(out), EOS_IDS)
    assert updated == [sb]  # one new token, no second fork
    assert sb.output_token_ids[:2] == before and len(sb.output_token_ids) == 3
    assert b.num_cached_tokens == 0


def test_preempted_sequence_resumes_from_its_own_cached_blocks():
    s = make_scheduler(num_blocks=4, block_size=2, prefix=True)
    m = Model(s)
    a = make_request(prompt(3), max_tokens=3)
    b = make_request(prompt(3, start=20), max_tokens=5)
    s.add_request(a)
    s.add_request(b)
    sb = b.seqs[0]
    m.step()
    m.step()
    first_block = sb.block_table[0]
    out, _ = m.step()
    assert out.preempted == [sb]
    out, done = schedule(s)
    # b's second block was handed to a (evicted), its first is still cached.
    assert done == [(sb, 2, 3)]
    assert sb.block_table[0] == first_block


def test_request_that_could_outgrow_the_cache_is_rejected_up_front():
    """Preemption cannot make room for a sequence longer than the whole pool: such a request
    would end early, so it is refused before it runs, with both numbers."""
    s = make_scheduler(num_blocks=4, block_size=4, max_model_len=1024)  # 16 slots
    with pytest.raises(InvalidRequest, match="may reach 17 tokens but the KV cache holds "
                                             "only 16") as e:
        s.check_admissible(8, 1, 9)
    assert e.value.param == "max_tokens"
    s.check_admissible(8, 1, 8)
    with pytest.raises(InvalidRequest, match="may reach 1024 tokens"):
        s.check_admissible(8, 1, None)  # until the context is full
    make_scheduler(num_blocks=4, block_size=4, max_model_len=16).check_admissible(8, 1, None)


def test_a_sequence_admitted_without_the_check_fails_loudly_instead_of_ending_early():
    s = make_scheduler(num_blocks=2, block_size=4, max_model_len=1024)  # 8 slots
    m = Model(s)
    req = make_request(prompt(7), max_tokens=None)
    s.add_request(req)  # check_admissible would have refused it
    m.step()
    m.step()  # 9 tokens, 8 computed: the pool is full
    out, _ = m.step()
    assert out.preempted == [req.seqs[0]]
    with pytest.raises(RuntimeError, match="outgrew the whole KV cache"):
        m.step()
    assert not req.seqs[0].status.finished


def test_preemption_never_ends_a_sequence_early():
    """Four requests that each fit the pool alone but not together: they preempt each other
    and still all get every token they asked for."""
    s = make_scheduler(num_blocks=6, block_size=4, budget=16, prefix=False)  # 24 slots
    m = Model(s)
    reqs = [make_request(prompt(6, start=100 * i), max_tokens=14) for i in range(4)]
    for r in reqs:
        s.check_admissible(6, 1, 14)
        s.add_request(r)
    for _ in range(500):
        if not s.has_unfinished:
            break
        m.step()
    assert s.num_preemptions > 0
    for r in reqs:
        assert r.seqs[0].status is SequenceStatus.FINISHED_LENGTH
        assert len(r.seqs[0].output_token_ids) == 14
    assert_all_free(s)


def test_preempted_sequence_over_the_budget_still_finishes_without_chunked_prefill():
    s = make_scheduler(num_blocks=5, block_size=4, budget=8, chunked=False, prefix=False)
    m = Model(s)
    a = make_request(prompt(8), max_tokens=12)
    b = make_request(prompt(7, start=50), max_tokens=12)
    s.add_request(a)
    s.add_request(b)
    preempted = []
    for _ in range(100):
        if not s.has_unfinished:
            break
        out, _ = m.step()
        preempted += out.preempted
    assert b.seqs[0] in preempted  # the scenario did preempt b with 9 tokens > budget 8
    assert not s.has_unfinished
    assert_all_free(s)


# ---- prefix caching ------------------------------------------------------------------------


def finished_request(s: Scheduler, tokens: list[int]) -> list[int]:
    """Run a one-token request to completion; return the blocks its prompt used."""
    m = Model(s)
    req = make_request(tokens, max_tokens=1)
    s.add_request(req)
    out = s.schedule()
    table = list(req.seqs[0].block_table)
    s.update_from_output(out, m.sample(out), EOS_IDS)
    assert req.finished
    return table


def test_prefix_hit_skips_cached_blocks():
    s = make_scheduler(block_size=4)
    base = prompt(12)
    old = finished_request(s, base)
    req = make_request(base[:8] + [99, 98])
    s.add_request(req)
    out, done = schedule(s)
    seq = req.seqs[0]
    assert done == [(seq, 8, 2)]
    assert seq.block_table[:2] == old[:2]
    assert req.num_cached_tokens == 8
    assert out.blocks_to_copy == []
    s.bm.check_invariants([seq.block_table])


def test_full_prefix_hit_still_recomputes_the_last_token():
    s = make_scheduler(block_size=4)
    base = prompt(12)
    old = finished_request(s, base)
    req = make_request(base)
    s.add_request(req)
    out, done = schedule(s)
    seq = req.seqs[0]
    assert done == [(seq, 11, 1)]  # its logits are needed to sample the first token
    assert out.scheduled[0].completes
    assert seq.block_table == old
    assert req.num_cached_tokens == 11
    assert out.blocks_to_copy == []  # the cached block has no other owner


def test_full_prefix_hit_on_a_running_sequence_copies_the_last_block():
    s = make_scheduler(block_size=4)
    m = Model(s)
    base = prompt(8)
    a = make_request(base)
    s.add_request(a)
    m.step()  # a's two full blocks are computed and registered
    sa = a.seqs[0]
    b = make_request(base)
    s.add_request(b)
    out, done = schedule(s)
    sb = b.seqs[0]
    assert done == [(sa, 8, 1), (sb, 7, 1)]
    assert sb.block_table[0] == sa.block_table[0]
    assert out.blocks_to_copy == [(sa.block_table[1], sb.block_table[1])]
    assert s.bm.blocks[sa.block_table[0]].ref_count == 2


def test_prefix_hit_needs_identical_earlier_blocks():
    s = make_scheduler(block_size=4)
    finished_request(s, prompt(4, start=1) + prompt(4, start=20) + [7])
    req = make_request(prompt(4, start=40) + prompt(4, start=20) + [7])
    s.add_request(req)
    _, done = schedule(s)
    assert done == [(req.seqs[0], 0, 9)]
    assert req.num_cached_tokens == 0


def test_prefix_caching_disabled_recomputes_everything():
    s = make_scheduler(block_size=4, prefix=False)
    base = prompt(12)
    finished_request(s, base)
    req = make_request(base)
    s.add_request(req)
    _, done = schedule(s)
    assert done == [(req.seqs[0], 0, 12)]


# ---- parallel samples ----------------------------------------------------------------------


def test_first_sample_forks_the_others_when_the_prompt_completes():
    s = make_scheduler(block_size=4)
    m = Model(s)
    other = make_request(prompt(3, start=60))
    req = make_request(prompt(6), n=3)
    last = make_request(prompt(2, start=80))
    for r in (other, req, last):
        s.add_request(r)
    out = s.schedule()
    assert [i.seq for i in out.scheduled] == [other.seqs[0], req.seqs[0], last.seqs[0]]
    sampled = m.sample(out)
    assert len(sampled[req.seqs[0]]) == 3
    updated = s.update_from_output(out, sampled, EOS_IDS)

    leader, s1, s2 = req.seqs
    assert req.forked
    assert updated == [other.seqs[0], leader, s1, s2, last.seqs[0]]
    assert s.running == [other.seqs[0], leader, s1, s2, last.seqs[0]]  # right after the leader
    assert [q.output_token_ids for q in req.seqs] == [[t] for t in sampled[leader]]
    assert all(q.status is RUNNING and q.num_computed_tokens == 6 for q in req.seqs)
    assert s1.block_table == s2.block_table == leader.block_table
    assert s1.block_table is not leader.block_table
    assert [s.bm.blocks[b].ref_count for b in leader.block_table] == [3, 3]
    s.bm.check_invariants([q.block_table for q in s.running])

    shared = leader.block_table[1]
    out, done = schedule(s)
    assert [(q, n) for q, _, n in done if q.request is req] == [(leader, 1), (s1, 1), (s2, 1)]
    # Position 6 lies in the shared, partly filled block: the first two writers copy it,
    # the last owner writes in place.
    assert out.blocks_to_copy == [(shared, leader.block_table[1]), (shared, s1.block_table[1])]
    assert s2.block_table[1] == shared
    assert len({leader.block_table[1], s1.block_table[1], s2.block_table[1]}) == 3
    assert s.bm.blocks[leader.block_table[0]].ref_count == 3  # the full block stays shared
    sampled = m.sample(out)
    assert all(len(tokens) == 1 for tokens in sampled.values())
    s.update_from_output(out, sampled, EOS_IDS)
    assert all(len(q.output_token_ids) == 2 for q in req.seqs)


def test_fork_at_a_block_boundary_copies_nothing():
    s = make_scheduler(block_size=4)
    m = Model(s)
    req = make_request(prompt(8), n=2)
    s.add_request(req)
    m.step()
    out, _ = m.step()
    assert out.blocks_to_copy == []
    a, b = req.seqs
    assert a.block_table[:2] == b.block_table[:2] and a.block_table[2] != b.block_table[2]


def test_best_of_forks_best_of_samples():
    s = make_scheduler()
    m = Model(s)
    req = make_request(prompt(5), n=1, best_of=3)
    s.add_request(req)
    _, updated = m.step()
    assert len(req.seqs) == 3 and updated == req.seqs
    assert len(s.running) == 3


def test_chunked_leader_forks_only_after_its_last_chunk():
    s = make_scheduler(budget=4)
    m = Model(s)
    req = make_request(prompt(10), n=2)
    s.add_request(req)
    leader, sibling = req.seqs
    m.step()
    m.step()
    assert not req.forked and s.running == [leader]
    assert sibling.status is WAITING and sibling.block_table == []
    _, updated = m.step()
    assert updated == [leader, sibling]
    assert sibling.num_computed_tokens == 10 and sibling.status is RUNNING


def test_sample_stopping_at_fork_releases_only_its_own_share():
    s = make_scheduler(block_size=4)
    req = make_request(prompt(6), n=3)
    s.add_request(req)
    out = s.schedule()
    leader, s1, s2 = req.seqs
    s.update_from_output(out, {leader: [EOS, 11, 12]}, EOS_IDS)
    assert leader.status is SequenceStatus.FINISHED_STOPPED and leader.block_table == []
    assert s.running == [s1, s2]
    assert [s.bm.blocks[b].ref_count for b in s1.block_table] == [2, 2]
    s.bm.check_invariants([s1.block_table, s2.block_table])


def test_all_samples_finishing_at_fork_free_everything():
    s = make_scheduler(block_size=4)
    m = Model(s)
    req = make_request(prompt(6), n=3, max_tokens=1)
    s.add_request(req)
    _, updated = m.step()
    assert updated == req.seqs and req.finished
    assert not s.running
    assert_all_free(s)


def test_finishing_one_sample_from_outside_keeps_the_others():
    s = make_scheduler(block_size=4)
    m = Model(s)
    req = make_request(prompt(6), n=2)
    s.add_request(req)
    m.step()
    m.step()
    a, b = req.seqs
    s.finish(a, SequenceStatus.FINISHED_STOPPED)  # e.g. a stop string matched in its text
    assert a.status is SequenceStatus.FINISHED_STOPPED and a.stop_reason is None
    assert a.block_table == [] and s.running == [b]
    s.bm.check_invariants([b.block_table])
    s.finish(a, SequenceStatus.FINISHED_ABORTED)  # already finished: a no-op
    assert a.status is SequenceStatus.FINISHED_STOPPED
    s.bm.check_invariants([b.block_table])


# ---- aborts at every stage -------------------------------------------------------------------


def reach(stage: str) -> tuple[Scheduler, Request]:
    s = make_scheduler(num_blocks=12, block_size=4, budget=8)
    m = Model(s)
    n = 3 if stage == "forked" else 1
    req = make_request(prompt(20 if stage == "mid_prefill" else 6), n=n)
    s.add_request(req)
    if stage == "mid_prefill":
        m.step()
        assert 0 < req.seqs[0].num_computed_tokens < 20
    elif stage == "decoding":
        m.step()
        m.step()
        assert len(req.seqs[0].output_token_ids) == 2
    elif stage == "forked":
        m.step()
        out, _ = m.step()
        assert out.blocks_to_copy and len(s.running) == 3
    if stage != "waiting":
        assert s.bm.num_free_blocks < 12
    return s, req


@pytest.mark.parametrize("stage", ["waiting", "mid_prefill", "decoding", "forked"])
def test_abort_returns_every_block(stage):
    s, req = reach(stage)
    s.abort_seqs(req.seqs)
    assert all(q.status is SequenceStatus.FINISHED_ABORTED for q in req.seqs)
    assert all(q.block_table == [] for q in req.seqs)
    assert not s.running and not s.waiting and not s.has_unfinished
    assert_all_free(s)
    s.abort_seqs(req.seqs)  # aborting again frees nothing twice
    assert_all_free(s)


def test_abort_of_a_preempted_sequence_and_its_neighbours():
    s, m, seqs = three_decoding()
    out, _ = m.step()
    assert out.preempted == [seqs[2]]
    for seq in (seqs[2], seqs[0], seqs[1]):
        s.abort_seqs([seq])
        assert seq.status is SequenceStatus.FINISHED_ABORTED
        s.bm.check_invariants([q.block_table for q in s.running])
    assert not s.has_unfinished
    assert_all_free(s)


def test_abort_leaves_other_requests_untouched():
    s = make_scheduler(block_size=4)
    m = Model(s)
    keep, drop = make_request(prompt(6)), make_request(prompt(6, start=30), n=2)
    s.add_request(keep)
    s.add_request(drop)
    m.step()
    m.step()
    before = list(keep.seqs[0].block_table)
    s.abort_seqs(drop.seqs)
    assert s.running == [keep.seqs[0]] and keep.seqs[0].block_table == before
    assert s.bm.num_free_blocks == s.bm.num_blocks - len(before)
    s.bm.check_invariants([before])


# ---- random workloads --------------------------------------------------------------------


BASE = [1 + (i * 5) % 3 for i in range(48)]  # few distinct tokens: many equal blocks
VOCAB = (EOS, 1, 2, 3)


class Simulation:
    """Drives a scheduler like EngineCore does, with a fake K/V cache to check every read.

    The K/V at position p of a sequence stands for its tokens [0, p]; every step checks that
    each running sequence's table holds exactly that for every computed position, so a wrong
    prefix hit, a missed copy-on-write or a block reused while owned shows up at once.
    """

    def __init__(self, s: Scheduler, rng: random.Random) -> None:
        self.s, self.bm, self.rng = s, s.bm, rng
        self.kv: dict[tuple[int, int], tuple[int, ...]] = {}
        self.requests: list[Request] = []

    def add(self, tokens: list[int], n: int, best_of: int | None, max_tokens: int) -> None:
        req = make_request(tokens, n=n, best_of=best_of, max_tokens=max_tokens)
        cfg, capacity = self.s.config, self.bm.num_blocks * self.bm.block_size
        never_fits = len(tokens) + 1 > capacity or (
            not cfg.enable_chunked_prefill and len(tokens) > cfg.max_num_batched_tokens
        ) or min(len(tokens) + max_tokens, cfg.max_model_len) > capacity
        try:
            self.s.check_admissible(len(tokens), req.num_samples, max_tokens)
        except InvalidRequest:
            assert never_fits
            return
        assert not never_fits
        self.s.add_request(req)
        self.requests.append(req)

    def slot(self, seq: SequenceState, pos: int) -> tuple[int, int]:
        return seq.block_table[pos // self.bm.block_size], pos % self.bm.block_size

    def verify(self, seq: SequenceState, upto: int) -> None:
        tokens = seq.all_token_ids
        for pos in range(upto):
            assert self.kv.get(self.slot(seq, pos)) == tuple(tokens[: pos + 1]), (seq, pos)

    def step(self, p_finish: float = 0.0, p_abort: float = 0.0) -> SchedulerOutput:
        s, bm, cfg = self.s, self.bm, self.s.config
        running_before, waiting_before = list(s.running), list(s.waiting)
        out = s.schedule()
        items = chunks(out)
        seqs = [seq for seq, _, _ in items]

        assert out.num_batched_tokens <= cfg.max_num_batched_tokens
        assert len(set(map(id, seqs))) == len(seqs)
        assert len(seqs) <= cfg.max_num_seqs
        for item, (seq, start, new) in zip(out.scheduled, items, strict=True):
            assert new >= 1 and start + new <= seq.num_tokens
            assert seq in s.running and seq.status is RUNNING
            assert len(seq.block_table) >= bm.blocks_for(start + new)
            # Without chunked prefill a prompt runs whole; a preempted sequence's recompute
            # (prompt + outputs) may still be chunked, by design, when it outgrew the budget.
            if not cfg.enable_chunked_prefill and not seq.output_token_ids:
                assert item.completes
        admitted = [q for q in seqs if q not in running_before]
        assert not any(q.status.finished for q in waiting_before)  # nothing ends in the queue
        assert admitted == waiting_before[: len(admitted)]  # FCFS from the head of the queue
        if out.preempted:
            assert not admitted
            assert list(s.waiting)[: len(out.preempted)] == out.preempted[::-1]
            for victim in out.preempted:
                assert victim not in seqs and victim not in s.running
                assert victim.status is WAITING and victim.block_table == []
                assert victim.num_computed_tokens == 0

        # The runner: copy blocks, read the cached prefix, write the new positions.
        old = dict(self.kv)
        for src, dst in out.blocks_to_copy:
            for off in range(bm.block_size):
                if (src, off) in old:
                    self.kv[(dst, off)] = old[(src, off)]
                else:
                    self.kv.pop((dst, off), None)
        for seq, start, _ in items:
            self.verify(seq, start)
        writes: dict[tuple[int, int], tuple[int, ...]] = {}
        for seq, start, new in items:
            tokens = seq.all_token_ids
            for pos in range(start, start + new):
                value = tuple(tokens[: pos + 1])
                assert writes.setdefault(self.slot(seq, pos), value) == value
        self.kv.update(writes)

        sampled: dict[SequenceState, list[int]] = {}
        expected: list[SequenceState] = []
        for item in out.scheduled:
            if item.completes:
                req = item.seq.request
                group = req.seqs if not req.forked else [item.seq]
                sampled[item.seq] = [self.rng.choice(VOCAB) for _ in group]
                expected += group
        lengths = {q: len(q.output_token_ids) for r in self.requests for q in r.seqs}
        updated = s.update_from_output(out, sampled, EOS_IDS)
        assert updated == expected
        for seq, start, new in items:
            assert seq.num_computed_tokens == start + new
        for r in self.requests:
            for q in r.seqs:
                assert len(q.output_token_ids) == lengths[q] + (q in updated)

        # A stop string matches only in a freshly generated token (EngineCore._after_token).
        for seq in updated:
            if not seq.status.finished and self.rng.random() < p_finish:
                s.finish(seq, SequenceStatus.FINISHED_STOPPED)
        for r in self.requests:
            if not r.finished and self.rng.random() < p_abort:
                s.abort_seqs(r.seqs)
        self.check()
        return out

    def check(self) -> None:
        s, bm = self.s, self.bm
        bm.check_invariants([seq.block_table for seq in s.running])
        assert len(s.running) <= s.config.max_num_seqs
        assert not set(map(id, s.running)) & set(map(id, s.waiting))
        for seq in s.running:
            assert seq.status is RUNNING
            assert len(seq.block_table) == bm.blocks_for(seq.num_computed_tokens)
            assert seq.num_computed_tokens < seq.num_tokens
            self.verify(seq, seq.num_computed_tokens)
        for seq in s.waiting:
            assert seq.status is WAITING and seq.block_table == []
            assert seq.num_computed_tokens == 0
        for r in self.requests:
            assert 0 <= r.num_cached_tokens < len(r.prompt_token_ids)
            for q in r.seqs:
                if q.status.finished:
                    assert q.block_table == [] and q not in s.running and q not in s.waiting
                elif q not in s.running and q not in s.waiting:  # a sample not yet forked
                    assert not r.forked and q.index > 0 and q.status is WAITING
                    assert q.block_table == [] and not r.seqs[0].status.finished


configs = st.fixed_dictionaries({
    "num_blocks": st.integers(1, 12),
    "block_size": st.integers(1, 4),
    "max_model_len": st.integers(4, 40),
    "max_num_seqs": st.integers(1, 4),
    "budget": st.integers(1, 16),
    "chunked": st.booleans(),
    "prefix": st.booleans(),
})


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=configs, data=st.data())
def test_random_workloads_keep_the_pool_consistent_and_leak_nothing(config, data):
    s = make_scheduler(**config)
    sim = Simulation(s, random.Random(data.draw(st.integers(0, 2**32), label="seed")))
    max_len = config["max_model_len"]
    for _ in range(data.draw(st.integers(1, 40), label="ops")):
        if data.draw(st.booleans(), label="add?"):
            shared = data.draw(st.integers(0, max_len - 1), label="shared prefix")
            tail = data.draw(st.lists(st.sampled_from(VOCAB[1:]), max_size=max_len - 1 - shared))
            tokens = (BASE[:shared] + tail) or [1]
            n = data.draw(st.integers(1, min(3, config["max_num_seqs"])), label="n")
            best_of = data.draw(st.one_of(st.none(), st.integers(n, min(3, config["max_num_seqs"]))))
            sim.add(tokens, n, best_of, data.draw(st.integers(1, 6), label="max_tokens"))
        else:
            p_finish = data.draw(st.sampled_from([0.0, 0.1, 0.3]), label="p_finish")
            p_abort = data.draw(st.sampled_from([0.0, 0.05, 0.2]), label="p_abort")
            sim.step(p_finish, p_abort)

    # Drain: run without outside interference; everything must finish (no livelock).
    for _ in range(500):
        if not s.has_unfinished:
            break
        sim.step()
    assert not s.has_unfinished
    assert all(r.finished for r in sim.requests)
    assert not s.running and not s.waiting
    assert all(q.block_table == [] for r in sim.requests for q in r.seqs)
    assert_all_free(s)


def test_token_view_reads_prompt_and_output_as_one_list():
    from engine.core.request import TokenView

    prompt, output = [1, 2, 3], [4, 5]
    view, whole = TokenView(prompt, output), prompt + output
    assert len(view) == 5 and list(view) == whole
    for start in range(6):
        for stop in range(start, 6):
            assert view[start:stop] == whole[start:stop]
    assert view[-1] == 5 and view[3] == 4
    with pytest.raises(ValueError, match="contiguous"):
        view[::2]
