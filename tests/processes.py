"""Process liveness from /proc (no psutil): what the tests that check for orphans need."""

from __future__ import annotations

import os
import time
from pathlib import Path


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: [state, ppid, ...]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def child_pids(parent: int | None = None) -> list[int]:
    """Live processes whose parent is `parent` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(entry)
            if stat is not None and stat[0] != "Z" and int(stat[1]) == parent:
                found.append(int(entry))
    return found


def wait_gone(pids: list[int], seconds: float = 10.0) -> bool:
    """Whether every pid has exited within `seconds`."""
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(alive(p) for p in pids)
