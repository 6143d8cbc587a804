"""AsyncEngine: a background step loop serving many concurrent async streams.

The model step runs in a worker thread (torch releases the GIL), so the event loop stays
free for I/O. Requests and aborts are queued and applied between steps, on the loop's
thread, so the engine's state is only ever touched by one thread at a time.

Fairness: the prompts of one client request (`add_requests`) form a group. Validated
requests wait here and are handed to the engine, whose own queue is first come first
served, only while it has room to start them (max_num_seqs), taking one request from each
group in turn: one request with many prompts cannot hold back a later client's request
for longer than one turn of the groups and one batch.

Nothing that can take long runs on the loop: validation runs on a validator thread, and a
request whose grammar is not compiled yet goes to the grammar workers instead (a large
schema compiles for seconds; xgrammar releases the GIL meanwhile), so plain requests and
cached grammars never queue behind a compile. Tokenization for `embed` runs on the
validator thread too.

All torch work, loading included, happens on that one worker thread: each thread that runs
parallel CPU ops gets its own OpenMP team, and a second team competing with the first's
spinning threads made every matmul ~3x slower (measured on the 2-core CI machine).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from engine.config import EngineConfig
from engine.embedding.decoder_pooling import (
    decoder_pooling,
)
from engine.embedding.sentence_encoder import EmbeddingOutput, EmbedInput
from engine.engine_core import EngineSnapshot, ValidatedRequest
from engine.errors import InvalidRequest
from engine.llm_engine import LLMEngine
from engine.outputs import RequestOutput, RequestOutputKind
from engine.sampling_params import SamplingParams
from engine.tokenizer import Tokenizer
from engine.tokenizer.chat_template import render_for_tokenizer

logger = logging.getLogger(__name__)

# Distinct new schemas compiling at once; more wait their turn. Each compile takes a core:
# at most half of them, the rest belong to the model (on 2 cores, parallel compiles made
# every one slower and starved the running streams).
GRAMMAR_WORKERS = max(1, (os.cpu_count() or 2) // 2)


@dataclass
class NewRequest:
    """One prompt of a client request, for AsyncEngine.add_requests."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    prompt: str | None = None  # the prompt as text, when it came as text


@dataclass
class _Pending:
    request_id: str
    valid: ValidatedRequest
    prompt: str | None
    kind: RequestOutputKind
    group: str


def _num_samples(params: object) -> int:
    """Sequences a request will run (validation refuses anything but SamplingParams)."""
    return (params.best_of or params.n) if isinstance(params, SamplingParams) else 1


class AsyncEngine:
    def __init__(self, config: EngineConfig) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-step")
        self.engine = self._executor.submit(LLMEngine, config).result()
        self.core = self.engine.core
        # Validation: its own thread, so neither the event loop nor the step loop waits on
        # it; requests that compile a new grammar go to the grammar workers (seconds each).
        self._validator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-validate")
        self._grammar_workers = ThreadPoolExecutor(max_workers=GRAMMAR_WORKERS,
                                                   thread_name_prefix="engine-grammar")
        self._streams: dict[str, asyncio.Queue[RequestOutput | BaseException]] = {}
        self._incoming = 0  # sequences validating or held here, not yet in the engine
        # Validated requests not yet handed to the engine, by group (see _feed).
        self._backlog: OrderedDict[str, deque[_Pending]] = OrderedDict()
        self._backlogged: dict[str, _Pending] = {}
        self._to_abort: list[str] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def tokenizer(self) -> Tokenizer:
        return self.core.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.core.max_model_len

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        chat_template: str | None = None,
    ) -> str:
        """The prompt text for a conversation (raises ValueError for malformed messages)."""
        return render_for_tokenizer(self.tokenizer, messages, add_generation_prompt, tools,
                                    chat_template)

    def stats(self) -> EngineSnapshot:
        """Load and counters now; `num_waiting` counts sequences (every sample of every
        prompt), including those being validated or not yet handed to the scheduler."""
        snap = self.core.snapshot()
        return dataclasses.replace(snap, num_waiting=snap.num_waiting + self._incoming)

    def summary(self) -> dict[str, Any]:
        """What the server logs at start-up for this model."""
        core = self.core
        return {
            "parameters": sum(p.numel() for p in core.runner.model.parameters()),
            "dtype": core.config.dtype,
            "device": str(core.device),
            "kv_blocks": core.block_manager.num_blocks,
            "kv_tokens": core.block_manager.num_blocks * core.block_manager.block_size,
            "max_model_len": core.max_model_len,
            "weights": core.weights_kind,
            "kernels": core.kernels_kind,
        }

    # ---- public API ----------------------------------------------------------------------

    async def add_request(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams,
        prompt: str | None = None, output_kind: RequestOutputKind = RequestOutputKind.DELTA,
    ) -> AsyncIterator[RequestOutput]:
        """Validate and queue a request; iterate the result for its outputs (by default
        DELTA: each holds only what is new).

        A bad request raises InvalidRequest here, before anything is queued. Closing the
        iterator early (a client went away) aborts the request.
        """
        streams = await self.add_requests([NewRequest(request_id, prompt_ids, params, prompt)],
                                          output_kind)
        return streams[0]

    async def add_requests(
        self, requests: list[NewRequest], output_kind: RequestOutputKind = RequestOutputKind.DELTA,
    ) -> list[AsyncIterator[RequestOutput]]:
        """Validate and queue the prompts of one client request, as one group: one stream
        per prompt, in order (see add_request).

        Every sequence of the group counts as waiting in `stats()` from the moment this is
        called, before its first await, so a caller that checks the load just before is
        never overtaken by another. A bad prompt raises InvalidRequest and queues none.
        """
        ids = [r.request_id for r in requests]
        if len(set(ids)) != len(ids):
            raise InvalidRequest("request ids of one group must differ")
        for rid in ids:
            if rid in self._streams:
                raise InvalidRequest(f"request_id {rid!r} is already in use")
        queues: dict[str, asyncio.Queue[RequestOutput | BaseException]] = {
            rid: asyncio.Queue() for rid in ids}
        self._streams.update(queues)  # reserved while validating
        num_seqs = sum(_num_samples(r.params) for r in requests)
        self._incoming += num_seqs
        queued = False
        try:
            # A grammar not compiled yet takes seconds: the grammar workers, so that plain
            # requests never queue behind it.
            slow = any(isinstance(r.params, SamplingParams)
                       and self.core.needs_compile(r.params.guided) for r in requests)
            valid = await asyncio.get_running_loop().run_in_executor(
                self._grammar_workers if slow else self._validator, self._validate_all,
                requests)
            for rid, queue in queues.items():
                if self._streams.get(rid) is not queue:
                    raise InvalidRequest(f"request {rid!r} was aborted before it was queued")
            queued = True
        finally:
            if not queued:
                self._incoming -= num_seqs
                for rid, queue in queues.items():
                    if self._streams.get(rid) is queue:
                        del self._streams[rid]
        if ids:
            group = deque(_Pending(r.request_id, v, r.prompt, output_kind, ids[0])
                          for r, v in zip(requests, valid, strict=True))
            self._backlog[ids[0]] = group
            self._backlogged.update((p.request_id, p) for p in group)
            self._ensure_running()
        return [self._stream(rid, queues[rid]) for rid in ids]

    def _validate_all(self, requests: list[NewRequest]) -> list[ValidatedRequest]:
        return [self.engine.validate(list(r.prompt_ids), r.params) for r in requests]

    def abort(self, request_id: str) -> None:
        """End a request at any stage; its KV blocks return to the pool before the next step."""
        if request_id in self._streams:
            self._to_abort.append(request_id)
            self._wakeup.set()

    def fail_all(self, error: Exception) -> None:
        """End every request now: each stream raises `error` at once (after the outputs it
        already holds), and the requests are aborted before the next step."""
        for request_id, queue in self._streams.items():
            queue.put_nowait(error)
            self._to_abort.append(request_id)
        self._wakeup.set()

    @property
    def embedding_dim(self) -> int:
        """Length of the vectors `embed` returns (the model's hidden size)."""
        return self.core.model_config.hidden_size

    async def embed(self, inputs: list[EmbedInput], pooling: str = "mean",
                    normalize: bool = True, truncate: bool = False) -> list[EmbeddingOutput]:
        """Pooled final hidden states of each input (see LLM.embed). Bad inputs raise
        ValueError here; the forward runs on the engine's worker thread between steps, over
        a scratch KV cache, so running requests are not disturbed."""
        config = decoder_pooling(pooling, normalize)
        loop = asyncio.get_running_loop()
        ids = await loop.run_in_executor(self._validator, self.core.tokenize_for_embedding,
                                         inputs, truncate)
        vectors = await loop.run_in_executor(self._executor, self.core.embed, ids, config)
        return [EmbeddingOutput(v.tolist(), i) for v, i in zip(vectors, ids, strict=True)]

    def on_fatal(self, callback: Callable[[Exception], None]) -> None:
        """`callback(error)`, from whichever thread notices, once the engine can no longer
        run: a tensor-parallel worker died (every running request has failed or will fail
        with that error). Without tensor parallelism there is no such failure."""
        if self.core.tp is not None:
            self.core.tp.on_failure(callback)

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._validator.shutdown(wait=True)
        self._grammar_workers.shutdown(wait=True)
        self._executor.shutdown(wait=True)
        self.core.close()  # the tensor-parallel workers, once no step can run

    @property
    def num_active(self) -> int:
        return len(self._streams)

    # ---- internals -----------------------------------------------------------------------

    async def _stream(
        self, request_id: str, queue: asyncio.Queue[RequestOutput | BaseException]
    ) -> AsyncIterator[RequestOutput]:
        finished = False
        try:
            while not finished:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            if not finished:
                self.abort(request_id)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())
        self._wakeup.set()

    def _apply_pending(self) -> None:
        for request_id in self._to_abort:
            pending = self._backlogged.get(request_id)
            if pending is not None:  # into the engine first, so that it ends as any other
                self._backlog[pending.group].remove(pending)
                if not self._backlog[pending.group]:
                    del self._backlog[pending.group]
                self._hand_over(pending)
            out = self.engine.abort(request_id)
            queue = self._streams.pop(request_id, None)
            if queue is not None and out is not None:
                queue.put_nowait(out)
        self._to_abort.clear()
        self._feed()

    def _feed(self) -> None:
        """Hand backlogged requests to the engine while it has room to start them, taking
        one from each group in turn. Whatever cannot start yet waits here, where a new
        group's first request goes ahead of the rest of an earlier group's many."""
        room = self.core.config.max_num_seqs - self.core.num_sequences()
        while self._backlog and room > 0:
            group_id, group = next(iter(self._backlog.items()))
            pending = group.popleft()
            if group:
                self._backlog.move_to_end(group_id)
            else:
                del self._backlog[group_id]
            self._hand_over(pending)
            room -= pending.valid.num_samples

    def _hand_over(self, pending: _Pending) -> None:
        del self._backlogged[pending.request_id]
        self._incoming -= pending.valid.num_samples
        self.engine.add_request(pending.request_id, pending.valid, pending.prompt, pending.kind)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._apply_pending()
            if not self.engine.has_unfinished():
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                outputs = await loop.run_in_executor(self._executor, self.engine.step)
            except Exception as e:  # a bug: fail every stream, keep serving new ones
                logger.exception("engine step failed")
                self._fail_all(e)
                continue
            for out in outputs:
                queue = self._streams.get(out.request_id)
                if queue is not None:
                    queue.put_nowait(out)
                    if out.finished:
                        del self._streams[out.request_id]

    def _fail_all(self, error: Exception) -> None:
        for request_id, queue in list(self._streams.items()):
            self.engine.abort(request_id)
            queue.put_nowait(RuntimeError(f"engine step failed: {error}"))
        self._streams.clear()
        for pending in self._backlogged.values():
            self._incoming -= pending.valid.num_samples
        self._backlog.clear()
        self._backlogged.clear()
