"""What the engine hands back: RequestOutput with one CompletionOutput per sample."""

from __future__ import annotations

from dataclasses import dataclass, field


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
