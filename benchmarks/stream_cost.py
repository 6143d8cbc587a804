"""Server CPU time per output token of one streamed request, short vs long.

    python -m benchmarks.stream_cost                       # this checkout
    python -m benchmarks.stream_cost --checkout ../old     # and another, side by side

What is measured is the output path (engine outputs -> detokenization -> chunks -> SSE),
whose cost per token must not grow with the length of the output. The model's own cost
also grows with the output (attention reads the whole context), which would hide that, so
the server runs a tiny random model (2 layers, hidden 64, a byte vocabulary: a decode step's
forward is a few small matmuls) and the per-token figure is dominated by everything around
the forward. The figure is the server process's CPU time (the scheduler's per-thread count)
over the request, divided by the tokens it streamed, split into the event-loop thread (the
serving side) and the others (the engine step: forward, sampler, engine-side output work).
The forward's own growth (attention) is then taken out by a second, offline measurement:
the engine step's CPU time outside ModelRunner.execute (execute_full). Checkouts are
measured interleaved, one request at a time, so that drift of the machine's speed hits both
alike.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import save

REPO = Path(__file__).resolve().parent.parent
TINY = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 512, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": True, "eos_token_id": 256}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ns(task: Path) -> int:
    return int((task / "schedstat").read_text().split()[0])  # time on a CPU, in ns


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time of a process (the scheduler's per-thread nanosecond count): (its main
    thread, which runs the event loop and so the serving side; all its other threads, the
    engine's step thread among them)."""
    tasks = Path(f"/proc/{pid}/task")
    main = _run_ns(tasks / str(pid))
    rest = sum(_run_ns(t) for t in tasks.iterdir() if t.name != str(pid))
    return main / 1e9, rest / 1e9


# Run in each checkout's own interpreter: the engine step's CPU time outside the forward
# (scheduling, sampling, detokenization and outputs), per token, offline.
_ENGINE_SIDE = """
import json, sys, time
import torch
torch.set_num_threads(1)
from engine import LLM, SamplingParams
llm = LLM(sys.argv[1], load_format="dummy", max_model_len=8192)
core = getattr(llm, "llm_engine", None)
runner = (core.core if core is not None else llm.engine).runner
# The method the engine step calls (execute_full since prompt logprobs; execute before).
name = "execute_full" if hasattr(runner, "execute_full") else "execute"
forward = getattr(runner, name)
spent = [0.0]
def timed(chunks):
    t = time.thread_time()
    try:
        return forward(chunks)
    finally:
        spent[0] += time.thread_time() - t
setattr(runner, name, timed)
out = {}
for n in json.loads(sys.argv[2]):
    params = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)
    llm.generate("Once upon a time", params)  # warm-up
    runs = []
    for _ in range(int(sys.argv[3])):
        spent[0] = 0.0
        t = time.thread_time()
        llm.generate("Once upon a time", params)
        runs.append((time.thread_time() - t - spent[0]) * 1e3 / n)
    out[n] = sorted(runs)[len(runs) // 2]
print(json.dumps(out))
"""


def engine_side(checkout: Path, model: Path, lengths: list[int], repeats: int
                ) -> dict[int, float]:
    """Median CPU ms per token of the engine step outside the model's forward."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _ENGINE_SIDE, str(model), json.dumps(lengths),
                           str(repeats)], cwd=checkout, env=env, capture_output=True,
                          text=True, check=True)
    return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


class Server:
    """`python -m serving` of `checkout` on the TINY model (dummy weights), `extra` flags
    added; benchmarks.shutdown_time uses it too."""

    def __init__(self, checkout: Path, model_dir: Path, data_dir: Path, log: Path,
                 extra: list[str] | None = None) -> None:
        self.checkout = checkout
        self.port = free_port()
        # One torch thread: spinning OpenMP workers would bill CPU time for waiting.
        env = {**os.environ, "PYTHONPATH": str(checkout), "ENGINE_API_KEY": "",
               "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "serving", "--model", str(model_dir), "--load-format",
               "dummy", "--served-model-name", "tiny", "--no-embedding-model",
               "--max-model-len", "8192", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(data_dir), *(extra or [])]
        self.proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=log.open("w"),
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server in {self.checkout} exited early")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server in {self.checkout} never became healthy")

    def stream(self, max_tokens: int) -> int:
        """One streamed completion; the number of tokens the server reported."""
        body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": max_tokens,
                "temperature": 0, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("POST", "/v1/completions", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {resp.read()[:300]!r}")
        tokens = 0
        for line in resp:
            if line.startswith(b"data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    tokens = usage["completion_tokens"]
        conn.close()
        return tokens

    def measure(self, max_tokens: int) -> dict[str, float]:
        """CPU milliseconds per streamed token: in all, on the event loop, elsewhere."""
        loop0, rest0 = cpu_seconds(self.proc.pid)
        tokens = self.stream(max_tokens)
        if tokens != max_tokens:
            raise RuntimeError(f"asked for {max_tokens} tokens, got {tokens}")
        loop1, rest1 = cpu_seconds(self.proc.pid)
        loop, rest = (loop1 - loop0) * 1e3 / tokens, (rest1 - rest0) * 1e3 / tokens
        return {"total": loop + rest, "event_loop": loop, "other_threads": rest}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", type=Path, default=[],
                        help="another checkout to measure beside this one (repeatable)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 2000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    checkouts = [REPO, *(c.resolve() for c in args.checkout)]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp, "tiny")
        model.mkdir()
        (model / "config.json").write_text(json.dumps(TINY))
        servers = [Server(c, model, Path(tmp, f"data{i}"), Path(tmp, f"server{i}.log"))
                   for i, c in enumerate(checkouts)]
        try:
            for s in servers:
                s.wait_ready()
                s.measure(50)  # warm-up: first-request costs out of the figures
            per_token: dict[str, dict[int, list[dict[str, float]]]] = {
                str(c): {n: [] for n in args.lengths} for c in checkouts}
            for _ in range(args.repeats):
                for n in args.lengths:
                    for s in servers:
                        per_token[str(s.checkout)][n].append(s.measure(n))
        finally:
            for s in servers:
                s.stop()
        engine_only = {str(c): engine_side(c, model, args.lengths, args.repeats)
                       for c in checkouts}
    short, long = args.lengths[0], args.lengths[-1]
    rows = []
    for part in ("total", "event_loop", "other_threads"):
        print(f"\nCPU ms per token, {part}:")
        print(f"{'checkout':<32} " + " ".join(f"{n:>8} tok" for n in args.lengths) +
              f"  {long}/{short}")
        for checkout, by_len in per_token.items():
            medians = {n: statistics.median(m[part] for m in v) for n, v in by_len.items()}
            ratio = medians[long] / medians[short]
            print(f"{checkout:<32} " + " ".join(f"{medians[n]:>8.3f} ms" for n in args.lengths)
                  + f"  {ratio:.3f}")
            rows.append({"checkout": checkout, "part": part, "ms_per_token_median": medians,
                         "long_over_short": ratio})
    print("\nCPU ms per token, engine step outside the forward (offline, in-process):")
    for checkout, medians in engine_only.items():
        ratio = medians[long] / medians[short]
        print(f"{checkout:<32} " + " ".join(f"{medians[n]:>8.3f} ms" for n in args.lengths)
              + f"  {ratio:.3f}")
        rows.append({"checkout": checkout, "part": "engine_outside_forward",
                     "ms_per_token_median": medians, "long_over_short": ratio})
    conditions: dict[str, Any] = {
        "model": "tiny random Llama (dummy weights, byte vocabulary)", "config": TINY,
        "request": "streamed /v1/completions, temperature 0, ignore_eos, one at a time",
        "metric": "server process CPU ms (schedstat) per streamed token, median of repeats; "
                  "event_loop = the main thread (serving), other_threads = the rest "
                  "(the engine step: model, sampler and engine-side output work)",
        "torch_threads": 1,
        "repeats": args.repeats}
    print("saved", save("stream_cost", {"conditions": conditions, "results": rows,
                                        "raw": per_token}))


if __name__ == "__main__":
    main()
