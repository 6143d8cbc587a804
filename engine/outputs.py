"""What the engine hands back: RequestOutput with one CompletionOutput per sample, in the
kind the caller asked for (RequestOutputKind)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class RequestOutputKind(enum.Enum):
    """How a request's outputs relate to each other (vLLM's RequestOutputKind)."""

    DELTA = "delta"  # each output holds only what is new since the last one (streams)
    CUMULATIVE = "cumulative"  # each output holds everything so far
    FINAL_ONLY = "final_only"  # one output, once the request has finished


@dataclass(frozen=True)
class Logprob:
    token_id: int
    token: str  # the vocabulary piece, decoded to text
    logprob: float
    bytes: bytes  # the UTF-8 bytes the token stands for (a piece of a character, maybe)


@dataclass(frozen=True)
class PositionLogprobs:
    """The sampled token's log-probability and the most likely alternatives, best first."""

    chosen: Logprob
    top: list[Logprob]
    rank: int | None = None  # the chosen token's rank among all (1 = most likely); prompts only


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None  # "stop" | "length" | "abort" | None while running
    stop_reason: str | int | None = None  # the stop string or stop token id that matched
    logprobs: list[PositionLogprobs] | None = None
    cumulative_logprob: float | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = False
    num_cached_tokens: int = 0  # prompt tokens whose K/V came from the prefix cache
    # With SamplingParams.prompt_logprobs: one entry per prompt token, the first None (it
    # has no context). A DELTA stream carries them once, in the first output after prefill.
    prompt_logprobs: list[PositionLogprobs | None] | None = None

    def add(self, delta: RequestOutput) -> None:
        """Fold the next DELTA output of this request into this one (an accumulator)."""
        mine = {o.index: o for o in self.outputs}
        for d in delta.outputs:
            o = mine.get(d.index)
            if o is None:
                o = mine[d.index] = replace(d, token_ids=list(d.token_ids), logprobs=(
                    list(d.logprobs) if d.logprobs is not None else None))
                self.outputs.append(o)
                continue
            o.text += d.text
            o.token_ids.extend(d.token_ids)
            if d.logprobs is not None:
                if o.logprobs is None:
                    o.logprobs = []
                o.logprobs.extend(d.logprobs)
            o.cumulative_logprob = d.cumulative_logprob
            o.finish_reason, o.stop_reason = d.finish_reason, d.stop_reason
        self.outputs.sort(key=lambda o: o.index)
        self.finished = delta.finished
        self.num_cached_tokens = delta.num_cached_tokens
        if delta.prompt_logprobs is not None:
            self.prompt_logprobs = delta.prompt_logprobs
