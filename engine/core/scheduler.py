"""Iteration-level scheduling: which sequences run this step, and how many tokens each.

Pure Python policy over the BlockManager. Every step has a token budget
(`max_num_batched_tokens`) and a sequence cap (`max_num_seqs`). Running sequences go first,
oldest first (decodes and unfinished prompt chunks); waiting ones are admitted FCFS while
budget and blocks last. A long prompt is cut into chunks across steps (chunked prefill).
When blocks run out, the newest running sequence is preempted: its blocks are freed and it
goes back to the head of the queue to recompute prompt + output later (same tokens, since
its random stream is its own). Preemption never ends a sequence: admission refuses a
request whose sequences could outgrow the whole pool, so each one fits alone, and the
oldest running sequence always makes progress.

Speculative decoding (`num_speculative_tokens` > 0): once the step is planned, the budget it
left over goes to n-gram draft tokens (engine/core/ngram.py) of its plain decodes, up to that
many each, oldest first, and per sequence as many as its last verification suggests (twice
as many after all were accepted, one more than were accepted otherwise). Drafts are computed together with the sequence's last token, each
budgeted as one batched token and given KV slots like any other; after verification the
accepted ones stay and the blocks that held only rejected ones go back to the pool. So
speculation never takes a token of budget the step would have used, and it takes a new
block only while one stays free for each other running sequence.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from engine.core.block_manager import BlockCopy, BlockManager, NoFreeBlocks, RegisterProgress
from engine.core.ngram import NGRAM_MIN, NgramIndex, propose
from engine.core.request import Request, SequenceState, SequenceStatus
from engine.errors import InvalidRequest


def _num_seqs(seqs: Iterable[SequenceState]) -> int:
    """Sequences these entries stand for: a request not yet forked is all its samples."""
    return sum(1 if s.request.forked else s.request.num_samples for s in seqs)


@dataclass(frozen=True)
class SchedulerConfig:
    max_model_len: int
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    enable_chunked_prefill: bool = True
    num_speculative_tokens: int = 0  # n-gram draft tokens per decoding sequence (0: off)
    ngram_min: int = NGRAM_MIN  # shortest suffix match that proposes drafts

    def __post_init__(self) -> None:
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_speculative_tokens < 0:
            raise ValueError(
                f"num_speculative_tokens must be >= 0, got {self.num_speculative_tokens}")


@dataclass
class ScheduledSequence:
    seq: SequenceState
    num_new_tokens: int  # the draft tokens included
    # Speculative draft tokens computed after the sequence's last token (then
    # num_new_tokens == 1 + len(draft_token_ids)); verified after the forward.
    draft_token_ids: list[int] = field(default_factory=list)
    num_accepted: int = 0  # after a verification: drafts the model agreed with
    num_emitted: int = 0  # ... and tokens appended (accepted, then the model's; a stop cuts)

    @property
    def start_pos(self) -> int:
        return self.seq.num_computed_tokens

    @property
    def completes(self) -> bool:
        """Whether this step reaches the sequence's last token, so it samples a new one."""
        num_real = self.num_new_tokens - len(self.draft_token_ids)
        return self.seq.num_computed_tokens + num_real == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSequence] = field(default_factory=list)
    blocks_to_copy: list[BlockCopy] = field(default_factory=list)
    preempted: list[SequenceState] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.bm = block_manager
        self.waiting: deque[SequenceState] = deque()
        self.running: list[SequenceState] = []
        self.num_preemptions = 0

    # ---- admission -----------------------------------------------------------------------

    def check_admissible(self, num_prompt_tokens: int, num_samples: int,
                         max_tokens: int | None) -> None:
        """Reject, up front, a request that could never be scheduled, or whose sequences
        could outgrow the whole KV cache (they would have to end early)."""
        capacity = self.bm.num_blocks * self.bm.block_size
        if num_prompt_tokens + 1 > capacity:
            raise InvalidRequest(
                f"prompt has {num_prompt_tokens} tokens but the KV cache holds only {capacity}",
                "prompt")
        longest = self.config.max_model_len
        if max_tokens is not None:
            longest = min(longest, num_prompt_tokens + max_tokens)
        if longest > capacity:
            raise InvalidRequest(
                f"prompt ({num_prompt_tokens} tokens) and output may reach {longest} tokens "
                f"but the KV cache holds only {capacity}", "max_tokens")
        budget = self.config.max_num_batched_tokens
        if not self.config.enable_chunked_prefill and num_prompt_tokens > budget:
            raise InvalidRequest(
                f"prompt has {num_prompt_tokens} tokens, more than max_num_batched_tokens "
                f"({budget}) with chunked prefill off", "prompt")
        if num_samples > self.config.max_num_seqs:
            raise InvalidRequest(
                f"the request asks for {num_samples} samples (n / best_of) but "
                f"max_num_seqs is {self.config.max_num_seqs}", "n")

    def add_request(self, request: Request) -> None:
        """Queue a request that passed check_admissible."""
        self.waiting.append(request.seqs[0])  # the other samples fork from it later

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_running_seqs(self) -> int:
        """Sequences running, a request not yet forked counting all its samples (read on
        a copy: other threads read this while a step runs)."""
        return _num_seqs(tuple(self.running))

    @property
    def num_waiting_seqs(self) -> int:
        """Sequences queued (new or preempted), counted as num_running_seqs."""
        return _num_seqs(tuple(self.waiting))

    # ---- one step ------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self._schedule_running(out, self.config.max_num_batched_tokens)
        if not out.preempted:  # memory is tight when we just preempted: admit nobody
            budget = self._schedule_waiting(out, budget)
            if self.config.num_speculative_tokens:
                self._add_drafts(out, budget)
        return out

    def _chunk(self, seq: SequenceState, num_computed: int, budget: int) -> int:
        """New tokens to compute for `seq` within `budget`; 0 if it must wait.

        A preempted sequence may recompute in chunks even with chunked prefill off: its
        prompt plus outputs can exceed the budget that its prompt alone fitted.
        """
        num_new = seq.num_tokens - num_computed
        if self.config.enable_chunked_prefill or seq.output_token_ids:
            return min(num_new, budget)
        return num_new if num_new <= budget else 0

    def _slots_in_use(self) -> int:
        """Running sequences, counting a request not yet forked as all its samples."""
        return _num_seqs(self.running)

    def _schedule_running(self, out: SchedulerOutput, budget: int) -> int:
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            num_new = self._chunk(seq, seq.num_computed_tokens, budget)
            if num_new == 0:
                i += 1
                continue
            if not self._allocate_or_preempt(seq, num_new, out):
                break  # seq itself was preempted; it was the last running one
            out.scheduled.append(ScheduledSequence(seq, num_new))
            budget -= num_new
            i += 1
        return budget

    def _add_drafts(self, out: SchedulerOutput, budget: int) -> None:
        """Give the budget the step left over to n-gram drafts of its plain decodes (oldest
        first), so speculation never takes a token or a block that the step would have
        used otherwise."""
        for item in out.scheduled:
            if budget <= 0:
                return
            seq = item.seq
            if item.num_new_tokens != 1 or not seq.output_token_ids or seq.grammar is not None:
                continue  # a prefill chunk; guided: its grammar would have to follow drafts
            drafts = self._drafts(seq, budget)
            if not drafts:
                continue
            table, computed = seq.block_table, seq.num_computed_tokens
            # Keep a free block for each other running sequence's next step; short of
            # that, only the drafts that fit in the blocks the sequence already has.
            needed = self.bm.slots_needed(table, computed, 1 + len(drafts))
            if needed + len(self.running) - 1 > self.bm.num_free_blocks:
                drafts = drafts[: len(table) * self.bm.block_size - computed - 1]
                if not drafts:
                    continue
            out.blocks_to_copy += self.bm.allocate_slots(table, computed, 1 + len(drafts))
            item.draft_token_ids = drafts
            item.num_new_tokens = 1 + len(drafts)
            budget -= len(drafts)

    def _drafts(self, seq: SequenceState, budget: int) -> list[int]:
        """Up to `budget` n-gram drafts for a sequence about to decode its last token,
        within the output it may still produce and the context."""
        k = self.config.num_speculative_tokens
        if seq.num_computed_tokens != seq.num_tokens - 1:
            return []
        # The step appends up to drafts + 1 tokens: no draft past max_tokens or the context.
        limit = min(k, seq.draft_limit or k, budget,
                    self.config.max_model_len - seq.num_tokens - 1)
        if seq.params.max_tokens is not None:
            limit = min(limit, seq.params.max_tokens - len(seq.output_token_ids) - 1)
        if limit <= 0:
            return []
        if seq.ngram_index is None:
            seq.ngram_index = NgramIndex()
        return propose(seq.tokens, seq.ngram_index, limit, min_n=self.config.ngram_min)

    def _allocate_or_preempt(self, seq: SequenceState, num_new: int, out: SchedulerOutput) -> bool:
        while True:
            try:
                out.blocks_to_copy += self.bm.allocate_slots(
                    seq.block_table, seq.num_computed_tokens, num_new
                )
                return True
            except NoFreeBlocks:
                victim = self.running.pop()  # the newest
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is seq:
                    return False

    def _preempt(self, seq: SequenceState) -> None:
        self.bm.free_table(seq.block_table)
        seq.register_progress = RegisterProgress()
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _schedule_waiting(self, out: SchedulerOutput, budget: int) -> int:
        while self.waiting and budget > 0:
            seq = self.waiting[0]
            if self.bm.blocks_for(seq.num_tokens + 1) > self.bm.num_blocks:
                # check_admissible makes this impossible; ending it would truncate silently.
                raise RuntimeError(f"sequence {seq.seq_id} outgrew the whole KV cache "
                                   f"({seq.num_tokens} tokens): admitted without a check")
            slots = 1 if seq.request.forked else seq.request.num_samples
            if self._slots_in_use() + slots > self.config.max_num_seqs:
                return budget
            # Prompt logprobs need every prompt position computed: no cached prefix.
            hits = ([] if seq.request.needs_prompt_logprobs
                    else self.bm.find_cached_prefix(seq.all_token_ids))
            # Even a full hit recomputes the last token: its logits are needed.
            num_cached = min(len(hits) * self.bm.block_size, seq.num_tokens - 1)
            num_new = self._chunk(seq, num_cached, budget)
            if num_new == 0:
                return budget
            self.bm.take(hits)
            table = list(hits)
            try:
                copies = self.bm.allocate_slots(table, num_cached, num_new)
            except NoFreeBlocks:
                self.bm.free_table(table)
                return budget
            self.waiting.popleft()
            seq.block_table, seq.num_computed_tokens = table, num_cached
            seq.status = SequenceStatus.RUNNING
            if not seq.output_token_ids:
                seq.request.num_cached_tokens = num_cached
            self.running.append(seq)
            out.blocks_to_copy += copies
            out.scheduled.append(ScheduledSequence(seq, num_new))
            budget -= num_new
        return budget

    # ---- after the step ------------------------------------------------------------------

    def update_from_output(
        self,
        out: SchedulerOutput,
        sampled: dict[SequenceState, list[int]],
        eos_token_ids: frozenset[int],
    ) -> list[SequenceState]:
        """Advance computed counts, append sampled tokens (forking parallel samples), stop.

        `sampled[seq]` holds one token, or for a request's first sequence finishing its
        prompt, one token per sample, or for a sequence that verified drafts, the accepted
        drafts and the model's next token. Returns every sequence that got new tokens.
        """
        updated: list[SequenceState] = []
        for item in out.scheduled:
            seq = item.seq
            if item.draft_token_ids:
                self._accept(item, sampled[seq], eos_token_ids)
                updated.append(seq)
                continue
            seq.num_computed_tokens += item.num_new_tokens
            self.bm.register_full_blocks(seq.block_table, seq.tokens, seq.num_computed_tokens,
                                         seq.register_progress)
            tokens = sampled.get(seq)
            if not tokens:
                continue
            targets = [seq]
            if not seq.request.forked:
                targets = self._fork(seq) if len(tokens) > 1 else targets
                seq.request.forked = True
            for target, token in zip(targets, tokens, strict=True):
                target.output_token_ids.append(token)
                updated.append(target)
                if target.check_stop(eos_token_ids, self.config.max_model_len):
                    self._release(target)
        return updated

    def _accept(self, item: ScheduledSequence, tokens: list[int],
                 eos_token_ids: frozenset[int]) -> None:
        """Append a verified run of tokens (the accepted drafts, then the model's own) up to
        the first that ends the sequence (what follows it is dropped); keep the K/V of the
        accepted drafts, free the rest."""
        seq, drafts = item.seq, item.draft_token_ids
        accepted = 0
        while accepted < min(len(drafts), len(tokens) - 1) and tokens[accepted] == drafts[accepted]:
            accepted += 1
        item.num_accepted = accepted
        # Draft length follows how the last ones fared: double after a full acceptance,
        # else one more than were accepted (a copied span ended; a new one grows back).
        k = self.config.num_speculative_tokens
        seq.draft_limit = min(k, 2 * len(drafts)) if accepted == len(drafts) else accepted + 1
        for token in tokens:
            seq.output_token_ids.append(token)
            item.num_emitted += 1
            if seq.check_stop(eos_token_ids, self.config.max_model_len):
                break
        # Valid K/V now: the old last token and the drafts that were kept; the slots of the
        # rejected ones are rewritten when their positions are computed for real.
        seq.num_computed_tokens += item.num_emitted
        self.bm.register_full_blocks(seq.block_table, seq.tokens, seq.num_computed_tokens,
                                     seq.register_progress)
        if seq.status.finished:
            self._release(seq)
        else:
            self.bm.truncate(seq.block_table, seq.num_tokens)

    def _fork(self, leader: SequenceState) -> list[SequenceState]:
        """The request's other samples share the leader's prompt blocks from now on."""
        siblings = [s for s in leader.request.seqs if s is not leader]
        at = self.running.index(leader) + 1
        for s in siblings:
            s.block_table = self.bm.fork(leader.block_table)
            s.register_progress = replace(leader.register_progress)  # the same blocks
            s.num_computed_tokens = leader.num_computed_tokens
            s.output_token_ids = list(leader.output_token_ids)
            s.status = SequenceStatus.RUNNING
        self.running[at:at] = siblings
        return [leader, *siblings]

    def finish(self, seq: SequenceState, status: SequenceStatus) -> None:
        """End a sequence from outside (a stop string matched, a grammar ended, an abort)."""
        if seq.status.finished:
            return
        seq.finish(status)
        self._release(seq)

    def abort_seqs(self, seqs: Iterable[SequenceState]) -> None:
        for seq in seqs:
            self.finish(seq, SequenceStatus.FINISHED_ABORTED)

    def _release(self, seq: SequenceState) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.bm.free_table(seq.block_table)
