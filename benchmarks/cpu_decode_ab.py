"""CPU decode steps of this tree against another commit's, interleaved step by step.

    python -m benchmarks.cpu_decode_ab --base REV [--batch 1] [--context 40] [--steps 30]

Two worker processes (this tree; REV's files, exported with `git archive`) load SmolLM2
int8 with the CPU ops and then take turns: one decode step in the old code, one in the new,
so load on the shared machine hits both alike. Printed: the median step time of each, the
aten calls of one step of each (deterministic), and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs inside each tree: only what both the old and the new code have (Decoder, cpu_ops).
WORKER = """
import sys, time, torch
from torch.utils._python_dispatch import TorchDispatchMode
from benchmarks.cpu_decode import Decoder
from engine.worker.cpu_ops import cpu_ops
batch, context, threads = (int(a) for a in sys.argv[1:4])
torch.set_num_threads(threads)
dec = Decoder("int8", batch, context, cpu_ops)
for _ in range(3):
    dec.step()

class Counter(TorchDispatchMode):
    n = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))

print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "count":
        with Counter() as c:
            dec.step()
        print(c.n, flush=True)
    else:
        start = time.perf_counter()
        dec.step()
        print(time.perf_counter() - start, flush=True)
"""


class Worker:
    def __init__(self, tree: Path, batch: int, context: int, threads: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(batch), str(context), str(threads)],
            cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"worker failed to start (said {line!r})")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def export(rev: str, dest: Path) -> Path:
    """REV's tracked files under dest (no checkout: the working tree stays as it is)."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--context", type=int, default=40)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"base": export(args.base, Path(tmp)), "new": ROOT}
        workers = {name: Worker(tree, args.batch, args.context, args.threads)
                   for name, tree in trees.items()}
        try:
            for w in workers.values():
                w.wait_ready()
            calls = {name: int(w.ask("count")) for name, w in workers.items()}
            load_before = os.getloadavg()[0]
            times: dict[str, list[float]] = {name: [] for name in workers}
            for _ in range(args.steps):
                for name, w in workers.items():
                    times[name].append(float(w.ask("step")))
            load_after = os.getloadavg()[0]
        finally:
            for w in workers.values():
                w.close()
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(f"batch {args.batch}, context {args.context}, {args.threads} thread(s), "
          f"{args.steps} interleaved steps; load average {load_before:.2f} -> {load_after:.2f}")
    for name in workers:
        print(f"{name:>5}: step p50 {ms[name]:.2f} ms, aten calls per step {calls[name]}")
    print(f"new / base step time: {ms['new'] / ms['base']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
