"""AsyncSentenceEncoder: a SentenceEncoder driven from asyncio, its torch work on one thread.

The encoder gets its own worker thread (loading included) with a single torch thread: the
chat engine's step thread already runs an OpenMP team, and a second multi-threaded team
competing with it makes every matmul several times slower on a small CPU.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from engine.embedding.sentence_encoder import EmbeddingOutput, EmbedInput, SentenceEncoder


def _one_torch_thread() -> None:
    torch.set_num_threads(1)
    # torch applies its thread count to a thread lazily, at its first parallel op, from a
    # process-wide value: take it now, while that value is 1 (the caller restores it).
    torch.get_num_threads()


class AsyncSentenceEncoder:
    """Load once (blocking, on the worker thread), then `await embed(...)` from the loop."""

    def __init__(self, model: str, **kwargs: Any) -> None:
        threads = torch.get_num_threads()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder",
                                            initializer=_one_torch_thread)
        try:
            self._executor.submit(lambda: None).result()  # the worker exists, pinned to 1
        finally:
            # set_num_threads also sets the default of threads started later (the chat
            # engine's among them): give them the process's count back.
            torch.set_num_threads(threads)
        try:
            self.encoder: SentenceEncoder = self._executor.submit(
                SentenceEncoder, model, **kwargs).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    @property
    def max_len(self) -> int:
        return self.encoder.max_len

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.encoder.token_offsets(text)

    def summary(self) -> dict[str, Any]:
        e = self.encoder
        return {"parameters": sum(p.numel() for p in e.model.parameters()), "dim": e.dim,
                "max_len": e.max_len, "pooling": e.pooling.mode,
                "normalize": e.pooling.normalize, "dtype": str(e.dtype).removeprefix("torch.")}

    async def embed(self, inputs: list[EmbedInput], truncate: bool = False) -> list[EmbeddingOutput]:
        """Tokenize and check (ValueError before any forward), then encode: both on the
        worker, off the event loop (a long input takes a while to tokenize)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self.encoder.embed, inputs, truncate)

    async def shutdown(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
