"""A request's state as it moves through the engine (pure Python, no torch)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from engine.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
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
            RequestStatus.FINISHED_STOPPED: "stop",
            RequestStatus.FINISHED_LENGTH: "length",
            RequestStatus.FINISHED_ABORTED: "abort",
        }.get(self)


@dataclass
class Request:
    """One sequence being generated: prompt, sampled tokens so far and why it ended."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    max_model_len: int
    output_token_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    stop_reason: str | int | None = None
    num_computed_tokens: int = 0  # tokens whose K/V are in the cache

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    def check_stop(self, eos_token_ids: frozenset[int]) -> bool:
        """After a token was appended: decide whether generation ends, and why."""
        token = self.output_token_ids[-1]
        num_out = len(self.output_token_ids)
        if num_out >= self.params.min_tokens:
            if token in self.params.stop_token_ids:
                return self._finish(RequestStatus.FINISHED_STOPPED, token)
            if token in eos_token_ids and not self.params.ignore_eos:
                return self._finish(RequestStatus.FINISHED_STOPPED, None)
        max_tokens = self.params.max_tokens
        if (max_tokens is not None and num_out >= max_tokens) or self.num_tokens >= self.max_model_len:
            return self._finish(RequestStatus.FINISHED_LENGTH, None)
        return False

    def stop_on_string(self, stop: str) -> None:
        self._finish(RequestStatus.FINISHED_STOPPED, stop)

    def _finish(self, status: RequestStatus, reason: str | int | None) -> bool:
        self.status = status
        self.stop_reason = reason
        return True
