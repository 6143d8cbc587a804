"""Requests and their sequences as they move through the engine (pure Python, no torch).

A Request holds one prompt and its parameters; each parallel sample (`n`, `best_of`) is a
SequenceState with its own output tokens, KV block table and random stream. Only the first
sequence is scheduled for the prompt; the others fork from it once the prompt is computed,
sharing its KV blocks.
"""

from __future__ import annotations

import enum
import itertools
from collections import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.core.block_manager import RegisterProgress
from engine.core.ngram import NgramIndex
from engine.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED_STOPPED = "finished_stopped"
    FINISHED_LENGTH = "finished_length"
    FINISHED_ABORTED = "finished_aborted"

    @property
    def finished(self) -> bool:
        return self.value.startswith("finished")

    @property
    def finish_reason(self) -> str | None:
        return {
            SequenceStatus.FINISHED_STOPPED: "stop",
            SequenceStatus.FINISHED_LENGTH: "length",
            SequenceStatus.FINISHED_ABORTED: "abort",
        }.get(self)


class TokenView(abc.Sequence[int]):
    """Two lists read as one (a sequence's prompt and its output so far), without copying."""

    def __init__(self, first: list[int], second: list[int]) -> None:
        self._first, self._second = first, second

    def __len__(self) -> int:
        return len(self._first) + len(self._second)

    def __iter__(self) -> Iterator[int]:
        return itertools.chain(self._first, self._second)

    def __getitem__(self, index: Any) -> Any:
        n = len(self._first)
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("TokenView slices must be contiguous")
            if stop <= n:
                return self._first[start:stop]
            if start >= n:
                return self._second[start - n : stop - n]
            return self._first[start:] + self._second[: stop - n]
        if index < 0:
            index += len(self)
        return self._first[index] if index < n else self._second[index - n]


@dataclass(eq=False)
class SequenceState:
    """One sample being generated: tokens so far, KV blocks, and why it ended."""

    seq_id: int
    request: Request
    index: int  # which sample of its request
    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    stop_reason: int | None = None  # the stop token id that ended it, if one did
    num_computed_tokens: int = 0  # tokens whose K/V are in the cache
    block_table: list[int] = field(default_factory=list)
    generator: Any = None  # the engine's per-sequence random stream (seeded requests)
    grammar: Any = None  # its GrammarState under guided decoding; dropped once finished
    # How far its blocks have been offered to the prefix cache (reset when they are freed).
    register_progress: RegisterProgress = field(default_factory=RegisterProgress)
    # Where each of its tokens occurs, for n-gram drafts (made on its first proposal).
    ngram_index: NgramIndex | None = None
    draft_limit: int | None = None  # drafts it may propose next (None: as many as allowed)

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.request.prompt_token_ids

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    @property
    def all_token_ids(self) -> list[int]:
        """Prompt + output as a new list: O(length). Per-step code uses `tokens`."""
        return self.request.prompt_token_ids + self.output_token_ids

    @property
    def tokens(self) -> TokenView:
        """Prompt + output, read in place: a slice costs what it holds."""
        return TokenView(self.request.prompt_token_ids, self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.request.prompt_token_ids) + len(self.output_token_ids)

    def check_stop(self, eos_token_ids: frozenset[int], max_model_len: int) -> bool:
        """After a token was appended: decide whether generation ends, and why."""
        token = self.output_token_ids[-1]
        num_out = len(self.output_token_ids)
        params = self.params
        if num_out >= params.min_tokens:
            if token in params.stop_token_ids:
                return self.finish(SequenceStatus.FINISHED_STOPPED, token)
            if token in eos_token_ids and not params.ignore_eos:
                return self.finish(SequenceStatus.FINISHED_STOPPED, None)
        if (params.max_tokens is not None and num_out >= params.max_tokens) or (
            self.num_tokens >= max_model_len
        ):
            return self.finish(SequenceStatus.FINISHED_LENGTH, None)
        return False

    def finish(self, status: SequenceStatus, reason: int | None = None) -> bool:
        self.status = status
        self.stop_reason = reason
        return True


@dataclass(eq=False)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival: float = 0.0
    seqs: list[SequenceState] = field(default_factory=list)
    forked: bool = False  # whether the other samples have forked from the first
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    # With params.prompt_logprobs: entry i is prompt token i + 1's (engine/worker/
    # prompt_logprobs.py TokenLogprobs), filled chunk by chunk during prefill.
    prompt_logprobs: list[Any] = field(default_factory=list)
    prompt_logprobs_sent: bool = False  # handed to the caller (with the first new token)

    @property
    def needs_prompt_logprobs(self) -> bool:
        """Whether prefill still owes prompt logprobs (then no prefix-cache hits: a cached
        prefix is never computed, so its logprobs would be missing)."""
        return (self.params.prompt_logprobs is not None
                and len(self.prompt_logprobs) < len(self.prompt_token_ids) - 1)

    @property
    def num_samples(self) -> int:
        return self.params.best_of or self.params.n

    @property
    def finished(self) -> bool:
        return all(s.status.finished for s in self.seqs)
