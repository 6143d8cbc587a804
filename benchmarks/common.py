"""What every benchmark records beside its numbers: device, versions, commit, time."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"  # the numbers came from uncommitted code
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return {
        "device": device,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=RESULTS.parent, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def save(name: str, record: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({**environment(), **record}, indent=2) + "\n")
    return path


def ms_stats(seconds: list[float]) -> dict[str, float]:
    """Mean, p50 and p99 of durations, in milliseconds ({} when there are none)."""
    ordered = sorted(seconds)
    if not ordered:
        return {}

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"mean": round(1000 * statistics.mean(ordered), 1), "p50": round(1000 * pick(0.5), 1),
            "p99": round(1000 * pick(0.99), 1)}


def memory_bandwidth_gbps(device: str | torch.device, traffic_bytes: int = 2 << 30) -> float:
    """Measured copy bandwidth in GB/s (bytes read + written per second) of one large copy:
    the ceiling that memory-bound kernels and batch-1 decode are compared with."""
    device = torch.device(device)
    src = torch.empty(traffic_bytes // 2, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    if device.type == "cuda":
        import triton.testing

        ms = triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median")
    else:
        dst.copy_(src)  # warm-up
        times = []
        for _ in range(5):
            start = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - start)
        ms = 1000 * statistics.median(times)
    return traffic_bytes / (ms / 1000) / 1e9
