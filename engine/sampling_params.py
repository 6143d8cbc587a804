"""SamplingParams: how one request picks its tokens, validated once at construction.

Every problem is an InvalidRequest naming the field (`param`), with a message that starts
with the field's name, so the HTTP layer can pass it straight back to the client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidRequest
from engine.guided import GuidedDecoding

MAX_LOGPROBS = 20
MAX_LOGIT_BIAS = 100.0
MAX_PENALTY = 2.0
# Bounds on list inputs whose cost is paid per generated token (stop strings are checked in
# every new piece of text; logit_bias and stop_token_ids are applied at every step), so one
# request cannot slow every other stream down. Generous next to OpenAI's 4 stop strings.
MAX_STOP_STRINGS = 32
MAX_STOP_LENGTH = 512  # characters
MAX_STOP_TOKEN_IDS = 256
MAX_LOGIT_BIAS_ENTRIES = 300


class ParamTypeError(InvalidRequest, TypeError):
    """A field of the wrong type. Also an InvalidRequest, so callers catch one exception for
    every bad parameter, while the type of the problem stays visible."""


def _param(name: str) -> str:
    """The field a checked name belongs to ("logit_bias values" -> "logit_bias")."""
    return name.split(" ", 1)[0]


def _check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    # bool is a subclass of int, but True as "number of tokens" is always a client bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamTypeError(f"{name} must be an integer, got {value!r}", _param(name))
    if lo is not None and value < lo:
        raise InvalidRequest(f"{name} must be >= {lo}, got {value}", _param(name))
    if hi is not None and value > hi:
        raise InvalidRequest(f"{name} must be <= {hi}, got {value}", _param(name))
    return value


def _check_float(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> float:
    """Accept ints and floats (not bools, not strings) and return a float in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamTypeError(f"{name} must be a number, got {value!r}", _param(name))
    value = float(value)
    if not math.isfinite(value):
        raise InvalidRequest(f"{name} must be finite, got {value}", _param(name))
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise InvalidRequest(
            f"{name} must be {'>' if lo_open else '>='} {lo:g}, got {value:g}", _param(name))
    if hi is not None and value > hi:
        raise InvalidRequest(f"{name} must be <= {hi:g}, got {value:g}", _param(name))
    return value


def _normalize_stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)):
        raise ParamTypeError(f"stop must be a string or a list of strings, got {stop!r}", "stop")
    if len(stop) > MAX_STOP_STRINGS:
        raise InvalidRequest(f"stop must hold at most {MAX_STOP_STRINGS} strings, got "
                             f"{len(stop)}", "stop")
    for s in stop:
        if not isinstance(s, str):
            raise ParamTypeError(f"stop must contain only strings, got {s!r}", "stop")
        if not s:
            raise InvalidRequest("stop must not contain empty strings", "stop")
        if len(s) > MAX_STOP_LENGTH:
            raise InvalidRequest(f"stop strings must be at most {MAX_STOP_LENGTH} characters, "
                                 f"got one of {len(s)}", "stop")
    return list(stop)


def _normalize_token_ids(name: str, ids: Any) -> list[int]:
    if ids is None:
        return []
    if not isinstance(ids, (list, tuple)):
        raise ParamTypeError(f"{name} must be a list of token ids, got {ids!r}", name)
    if len(ids) > MAX_STOP_TOKEN_IDS:
        raise InvalidRequest(f"{name} must hold at most {MAX_STOP_TOKEN_IDS} token ids, got "
                             f"{len(ids)}", name)
    return [_check_int(name, i, lo=0) for i in ids]


def _bias_key(key: Any) -> int:
    # JSON object keys are always strings, so OpenAI clients send {"50256": -100}.
    if isinstance(key, str):
        try:
            key = int(key.strip())
        except ValueError:
            raise InvalidRequest(f"logit_bias keys must be token ids, got {key!r}",
                                 "logit_bias") from None
    return _check_int("logit_bias keys", key, lo=0)


def _normalize_logit_bias(bias: Any) -> dict[int, float] | None:
    if bias is None:
        return None
    if not isinstance(bias, dict):
        raise ParamTypeError(f"logit_bias must be a mapping of token id to bias, got {bias!r}",
                             "logit_bias")
    if len(bias) > MAX_LOGIT_BIAS_ENTRIES:
        raise InvalidRequest(f"logit_bias must hold at most {MAX_LOGIT_BIAS_ENTRIES} token ids, "
                             f"got {len(bias)}", "logit_bias")
    out: dict[int, float] = {}
    for key, value in bias.items():
        out[_bias_key(key)] = _check_float(
            "logit_bias values", value, lo=-MAX_LOGIT_BIAS, hi=MAX_LOGIT_BIAS
        )
    return out


@dataclass
class SamplingParams:
    """Per-request sampling settings, shaped like the leading engines' SamplingParams.

    temperature 0 means greedy; top_k 0 (or -1, normalised to 0) disables top-k;
    max_tokens None means "until the context is full"; logprobs is the number of top
    alternatives to return per token (0 = only the chosen token's logprob). prompt_logprobs
    is the same for every prompt token (computed during prefill; None = off); a request that
    asks for them does not use the prefix cache, since a cached prefix is never computed.
    """

    n: int = 1
    best_of: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    # Constrain the output to a grammar (JSON object, JSON schema, tool-call structural tag).
    guided: GuidedDecoding | None = None

    def __post_init__(self) -> None:
        self._validate_counts()
        self._validate_sampling()
        self._validate_penalties()
        self._validate_stopping()
        self._validate_flags()
        self._validate_guided()

    def _validate_counts(self) -> None:
        self.n = _check_int("n", self.n, lo=1)
        if self.best_of is not None:
            self.best_of = _check_int("best_of", self.best_of, lo=1)
            if self.best_of < self.n:
                raise InvalidRequest(f"best_of must be >= n ({self.n}), got {self.best_of}", "best_of")
        if self.logprobs is not None:
            self.logprobs = _check_int("logprobs", self.logprobs, lo=0, hi=MAX_LOGPROBS)
        if self.prompt_logprobs is not None:
            self.prompt_logprobs = _check_int("prompt_logprobs", self.prompt_logprobs, lo=0,
                                              hi=MAX_LOGPROBS)
        if self.seed is not None:
            self.seed = _check_int("seed", self.seed)

    def _validate_sampling(self) -> None:
        self.temperature = _check_float("temperature", self.temperature, lo=0.0)
        self.top_p = _check_float("top_p", self.top_p, lo=0.0, hi=1.0, lo_open=True)
        self.top_k = _check_int("top_k", self.top_k, lo=-1)
        if self.top_k == -1:
            self.top_k = 0
        self.min_p = _check_float("min_p", self.min_p, lo=0.0, hi=1.0)

    def _validate_penalties(self) -> None:
        self.presence_penalty = _check_float(
            "presence_penalty", self.presence_penalty, lo=-MAX_PENALTY, hi=MAX_PENALTY
        )
        self.frequency_penalty = _check_float(
            "frequency_penalty", self.frequency_penalty, lo=-MAX_PENALTY, hi=MAX_PENALTY
        )
        self.repetition_penalty = _check_float(
            "repetition_penalty", self.repetition_penalty, lo=0.0, lo_open=True
        )
        self.logit_bias = _normalize_logit_bias(self.logit_bias)

    def _validate_stopping(self) -> None:
        self.stop = _normalize_stop(self.stop)
        self.stop_token_ids = _normalize_token_ids("stop_token_ids", self.stop_token_ids)
        if self.max_tokens is not None:
            self.max_tokens = _check_int("max_tokens", self.max_tokens, lo=1)
        self.min_tokens = _check_int("min_tokens", self.min_tokens, lo=0)
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise InvalidRequest(
                f"min_tokens must be <= max_tokens ({self.max_tokens}), got {self.min_tokens}",
                "min_tokens")

    def _validate_flags(self) -> None:
        for name in ("include_stop_str_in_output", "ignore_eos", "skip_special_tokens"):
            if not isinstance(getattr(self, name), bool):
                raise ParamTypeError(f"{name} must be a boolean, got {getattr(self, name)!r}", name)

    def _validate_guided(self) -> None:
        if self.guided is None:
            return
        if isinstance(self.guided, dict):  # the researcher's shorthand: the fields as a dict
            try:
                self.guided = GuidedDecoding(**self.guided)
            except TypeError as e:
                raise ParamTypeError(f"guided has an unknown field: {e}", "guided") from None
        if not isinstance(self.guided, GuidedDecoding):
            raise ParamTypeError(f"guided must be a GuidedDecoding, got {self.guided!r}", "guided")
        # A finished grammar allows only EOS: holding EOS back would leave no token at all.
        if self.min_tokens > 0:
            raise InvalidRequest("min_tokens cannot be combined with guided decoding: the "
                                 "grammar decides where the output ends", "min_tokens")
        if self.ignore_eos:
            raise InvalidRequest("ignore_eos cannot be combined with guided decoding: the "
                                 "grammar decides where the output ends", "ignore_eos")

    @property
    def greedy(self) -> bool:
        """True when sampling always picks the most likely token."""
        return self.temperature == 0.0 or self.top_k == 1

    def check_vocab(self, vocab_size: int) -> None:
        """Reject token ids the model cannot produce (EngineCore.validate calls it)."""
        for tok in self.logit_bias or {}:
            if tok >= vocab_size:
                raise InvalidRequest(
                    f"logit_bias token id {tok} is outside the vocabulary ({vocab_size})",
                    "logit_bias")
        for tok in self.stop_token_ids or []:
            if tok >= vocab_size:
                raise InvalidRequest(
                    f"stop_token_ids {tok} is outside the vocabulary ({vocab_size})",
                    "stop_token_ids")
