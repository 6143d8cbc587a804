"""OutputProcessor: the engine's token ids in, the caller's RequestOutputs out.

EngineCore.step() reports, per sequence, only what is new (token ids, their logprobs, how it
ended). Everything about text lives here, once: incremental detokenization, stop strings,
the text of logprobs, n / best_of ranking, and the shape of the outputs the caller asked for
(RequestOutputKind). Work per step is proportional to what is new, never to what came before.

A stop string is found here, after the step that produced it; `process` returns the
sequences it stopped so the driver can end them in the core before the next step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.engine_core import SequenceUpdate
from engine.outputs import (
    CompletionOutput,
    Logprob,
    PositionLogprobs,
    RequestOutput,
    RequestOutputKind,
)
from engine.sampling_params import SamplingParams
from engine.tokenizer import Tokenizer
from engine.tokenizer.detokenizer import IncrementalDetokenizer
from engine.worker.sampler import TokenLogprobs


@dataclass
class _Sample:
    """One sample's output so far, and how much of it the caller has seen."""

    index: int
    detokenizer: IncrementalDetokenizer
    text: list[str] = field(default_factory=list)  # released pieces, joined on demand
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[PositionLogprobs] | None = None
    cumulative_logprob: float = 0.0
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    # What the current step added (DELTA outputs), reset once reported.
    new_text: list[str] = field(default_factory=list)
    new_tokens: int = 0
    new_logprobs: int = 0
    changed: bool = False

    def output(self, index: int, delta: bool, show_logprobs: bool) -> CompletionOutput:
        if delta:
            text = "".join(self.new_text)
            ids = self.token_ids[len(self.token_ids) - self.new_tokens:]
            logprobs = (self.logprobs[len(self.logprobs) - self.new_logprobs:]
                        if self.logprobs is not None else None)
        else:
            text, ids, logprobs = "".join(self.text), list(self.token_ids), self.logprobs
            logprobs = list(logprobs) if logprobs is not None else None
        return CompletionOutput(
            index=index, text=text, token_ids=ids, finish_reason=self.finish_reason,
            stop_reason=self.stop_reason, logprobs=logprobs if show_logprobs else None,
            cumulative_logprob=self.cumulative_logprob if show_logprobs else None,
        )

    def reported(self) -> None:
        self.new_text.clear()
        self.new_tokens = self.new_logprobs = 0
        self.changed = False


@dataclass
class _RequestState:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    kind: RequestOutputKind
    samples: list[_Sample]
    num_cached_tokens: int = 0
    prompt_logprobs: list[PositionLogprobs | None] | None = None
    prompt_logprobs_new: bool = False  # not yet in a DELTA output

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.samples)

    @property
    def ranked(self) -> bool:
        """best_of > n: only the n most likely samples are returned, once all are done."""
        return len(self.samples) > self.params.n


@dataclass
class ProcessedStep:
    outputs: list[RequestOutput]
    stopped: list[tuple[str, int]]  # (request id, sample index) ended by a stop string


class OutputProcessor:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._requests: dict[str, _RequestState] = {}

    def add_request(self, request_id: str, prompt: str | None, prompt_token_ids: list[int],
                    params: SamplingParams, num_samples: int,
                    kind: RequestOutputKind = RequestOutputKind.FINAL_ONLY) -> None:
        samples = [
            _Sample(i, IncrementalDetokenizer(
                self.tokenizer, prompt_token_ids, skip_special_tokens=params.skip_special_tokens,
                stop=params.stop or (), include_stop_str_in_output=params.include_stop_str_in_output,
            ), logprobs=[] if params.logprobs is not None else None)
            for i in range(num_samples)
        ]
        self._requests[request_id] = _RequestState(
            request_id, prompt, prompt_token_ids, params, kind, samples)

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    def process(self, updates: list[SequenceUpdate]) -> ProcessedStep:
        touched: dict[str, _RequestState] = {}
        stopped: list[tuple[str, int]] = []
        for u in updates:
            req = self._requests.get(u.request_id)
            if req is None:
                continue
            touched[u.request_id] = req
            req.num_cached_tokens = u.num_cached_tokens
            if u.prompt_logprobs is not None and req.prompt_logprobs is None:
                req.prompt_logprobs = [None, *map(self._position_logprobs, u.prompt_logprobs)]
                req.prompt_logprobs_new = True
            sample = req.samples[u.index]
            if sample.finish_reason is None and self._apply(sample, u, bool(req.params.stop)):
                stopped.append((u.request_id, u.index))
        outputs = []
        for req in touched.values():
            out = self._output(req)
            if out is not None:
                outputs.append(out)
            if req.finished:
                del self._requests[req.request_id]
        return ProcessedStep(outputs, stopped)

    # ---- one sequence --------------------------------------------------------------------

    def _apply(self, sample: _Sample, u: SequenceUpdate, has_stop_strings: bool) -> bool:
        """Fold one update into its sample; True if a stop string ended it here."""
        sample.changed = True
        ids, entries = u.new_token_ids, u.new_logprobs
        text_ids = ids
        if u.finish_reason == "stop" and ids and not u.last_token_is_text:
            # The core stops on EOS, a stop token id or a finished grammar (stop strings are
            # found here): that token's text never reaches the output. (A repeat guard ends
            # on an ordinary token, which is text.)
            text_ids = ids[:-1]
        detok = sample.detokenizer
        if has_stop_strings and len(text_ids) > 1:
            # Several tokens in one step (speculative decoding): a stop string may end at
            # any of them, and the tokens after it are no part of the output.
            for n, token in enumerate(text_ids, 1):
                self._release(sample, detok.step([token]))
                if detok.stop_reason is not None:
                    ids, entries = ids[:n], entries[:n] if entries else entries
                    break
        else:
            self._release(sample, detok.step(text_ids))
        sample.token_ids.extend(ids)
        sample.new_tokens += len(ids)
        for entry in entries or ():
            sample.cumulative_logprob += entry.logprob
            if sample.logprobs is not None:
                sample.logprobs.append(self._position_logprobs(entry))
                sample.new_logprobs += 1
        if detok.stop_reason is not None:
            sample.finish_reason, sample.stop_reason = "stop", detok.stop_reason
            return True
        if u.finish_reason is not None:
            self._release(sample, detok.flush())  # held-back text is final now
            sample.finish_reason, sample.stop_reason = u.finish_reason, u.stop_reason
        return False

    @staticmethod
    def _release(sample: _Sample, text: str) -> None:
        if text:
            sample.text.append(text)
            sample.new_text.append(text)

    def _position_logprobs(self, entry: TokenLogprobs) -> PositionLogprobs:
        tok = self.tokenizer

        def make(token_id: int, logprob: float) -> Logprob:
            return Logprob(token_id, tok.decode([token_id]), logprob, tok.token_bytes(token_id))

        return PositionLogprobs(make(entry.token_id, entry.logprob),
                                [make(*t) for t in entry.top], entry.rank)

    # ---- outputs -------------------------------------------------------------------------

    def _output(self, req: _RequestState) -> RequestOutput | None:
        finished = req.finished
        kind = req.kind
        if (kind is RequestOutputKind.FINAL_ONLY or req.ranked) and not finished:
            return None
        show = req.params.logprobs is not None
        if req.ranked:
            best = sorted(req.samples, key=lambda s: s.cumulative_logprob, reverse=True)
            chosen = list(enumerate(best[: req.params.n]))
            delta = False  # nothing was sent before: the whole of each
        else:
            chosen = [(s.index, s) for s in req.samples]
            delta = kind is RequestOutputKind.DELTA
            if delta:
                chosen = [(i, s) for i, s in chosen if s.changed]
        completions = [s.output(i, delta, show) for i, s in chosen]
        for s in req.samples:
            s.reported()
        prompt_logprobs = req.prompt_logprobs
        if delta:  # once, in the first output that has them
            prompt_logprobs = prompt_logprobs if req.prompt_logprobs_new else None
        req.prompt_logprobs_new = False
        return RequestOutput(req.request_id, req.prompt, req.prompt_token_ids, completions,
                             finished=finished, num_cached_tokens=req.num_cached_tokens,
                             prompt_logprobs=prompt_logprobs)
