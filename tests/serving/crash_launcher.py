"""`python -m tests.serving.crash_launcher N SERVER_ARGS...`: `python -m serving` that kills
itself (SIGKILL) in the middle of a vector-store write, once N points are written in all: a
`kill -9` landing at a chosen place, for the crash tests. Nothing of it is in the server."""

from __future__ import annotations

import os
import runpy
import signal
import sys
from typing import Any


def arm(limit: int) -> None:
    from qdrant_client.local.qdrant_local import QdrantLocal

    real = QdrantLocal.upsert
    written = 0

    def upsert(self: QdrantLocal, collection_name: str, points: Any, **kwargs: Any) -> Any:
        nonlocal written
        room = limit - written
        if len(points) > room:  # this write crosses the limit: write up to it, then die
            real(self, collection_name, points[:room], **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        written += len(points)
        return real(self, collection_name, points, **kwargs)

    QdrantLocal.upsert = upsert  # type: ignore[method-assign]


if __name__ == "__main__":
    arm(int(sys.argv[1]))
    sys.argv = ["serving", *sys.argv[2:]]
    runpy.run_module("serving", run_name="__main__", alter_sys=True)
