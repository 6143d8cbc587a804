"""AsyncEngine: a background step loop serving many concurrent async streams.

The model step runs in a worker thread (torch releases the GIL), so the event loop stays
free for I/O. Requests and aborts are queued and applied between steps, on the loop's
thread, so the engine's state is only ever touched by one thread at a time.

All torch work, loading included, happens on that one worker thread: each thread that runs
parallel CPU ops gets its own OpenMP team, and a second team competing with the first's
spinning threads made every matmul ~3x slower (measured on the 2-core CI machine).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from engine.chat_template import render_for_tokenizer
from engine.config import EngineConfig
from engine.embedding.decoder_pooling import (
    decoder_pooling,
    embed_with_decoder,
    tokenize_for_decoder,
)
from engine.embedding.sentence_encoder import EmbeddingOutput, EmbedInput
from engine.engine_core import EngineCore
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams
from engine.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    prompt: str | None


class AsyncEngine:
    def __init__(self, config: EngineConfig) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-step")
        self.core = self._executor.submit(EngineCore, config).result()
        self._streams: dict[str, asyncio.Queue[RequestOutput | BaseException]] = {}
        self._to_add: list[_Pending] = []
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

    @property
    def num_running(self) -> int:
        return len(self.core.scheduler.running)

    @property
    def num_waiting(self) -> int:
        """Sequences queued in the scheduler plus requests not yet handed to it."""
        return len(self.core.scheduler.waiting) + len(self._to_add)

    @property
    def kv_cache_usage(self) -> float:
        bm = self.core.block_manager
        return 1.0 - bm.num_free_blocks / bm.num_blocks

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

    def add_request(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams,
        prompt: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Queue a request; iterate the result for its outputs (each one cumulative).

        Bad prompts and parameters raise ValueError here, before anything is queued.
        Closing the iterator early (a client went away) aborts the request.
        """
        if request_id in self._streams:
            raise ValueError(f"request_id {request_id!r} is already in use")
        self.core.check_prompt(prompt_ids)
        params.check_vocab(self.core.model_config.vocab_size)
        self.core.check_guided(params)  # a schema the grammar engine refuses: refuse it now
        queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self._streams[request_id] = queue
        self._to_add.append(_Pending(request_id, list(prompt_ids), params, prompt))
        self._ensure_running()
        return self._stream(request_id, queue)

    async def compile_guided(self, params: SamplingParams) -> None:
        """Compile (and cache) the request's grammar in a worker thread: a new schema takes
        a noticeable time, which must not stall the event loop. ValueError if invalid."""
        if params.guided is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.core.check_guided, params)

    def abort(self, request_id: str) -> None:
        """End a request at any stage; its KV blocks return to the pool before the next step."""
        if request_id in self._streams:
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
        ids = tokenize_for_decoder(self.core, inputs, truncate)
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(self._executor, embed_with_decoder, self.core,
                                             ids, config)
        return [EmbeddingOutput(v.tolist(), i) for v, i in zip(vectors, ids, strict=True)]

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=True)

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
        # Adds first, so that an abort of a request not yet queued still finds it.
        for p in self._to_add:
            try:
                self.core.add_request(p.request_id, p.prompt_ids, p.params, p.prompt)
            except ValueError as e:
                self._streams.pop(p.request_id).put_nowait(e)
        self._to_add.clear()
        for request_id in self._to_abort:
            out = self.core.abort_request(request_id)
            queue = self._streams.pop(request_id, None)
            if queue is not None and out is not None:
                queue.put_nowait(out)
        self._to_abort.clear()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._apply_pending()
            if not self.core.has_unfinished():
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                outputs = await loop.run_in_executor(self._executor, self.core.step)
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
            self.core.abort_request(request_id)
            queue.put_nowait(RuntimeError(f"engine step failed: {error}"))
        self._streams.clear()
