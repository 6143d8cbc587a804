"""Request work that can take long runs off the event loop, on a few threads of its own:
parsing and checking a large body (up to --max-body-bytes), JSON schemas, rendering and
tokenizing a long prompt, reading and chunking files. The loop meanwhile keeps answering
/health and streaming tokens to everyone else.

Tokenization releases the GIL (engine/tokenizer/backends.py), so it runs truly in
parallel; pure-Python work still shares the GIL, but the loop gets it back every few
milliseconds instead of waiting for the whole job.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
PREPARE_THREADS = 4

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=PREPARE_THREADS,
                                           thread_name_prefix="serving-prepare")
        return _executor


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on a preparation thread; its exceptions (APIError...) raise here."""
    return await asyncio.get_running_loop().run_in_executor(
        _pool(), functools.partial(fn, *args, **kwargs))
