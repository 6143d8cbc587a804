"""Server CPU time per output token of one streamed request, short vs long.

    python -m benchmarks.stream_cost                       # this checkout
    python -m benchmarks.stream_cost --checkout ../old     # and another, side by side

What is measured is the output path (engine outputs -> detokenization -> chunks -> SSE),
whose cost per token must not grow with the length of the output. The model's own cost
also grows with the output (attention reads the whole context), which would hide that, so
the server runs a tiny random model (2 layers, hidden 64, a byte vocabulary: a decode step's
forward is a few small matmuls) and the per-token figure is dominated by everything around
the forward. The figure is the server process's user+system CPU time (all threads) over the
request, divided by the tokens it streamed. Checkouts are measured interleaved, one request
at a time, so that drift of the machine's speed hits both alike.
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
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


class Server:
    def __init__(self, checkout: Path, model_dir: Path, data_dir: Path, log: Path) -> None:
        self.checkout = checkout
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(checkout), "ENGINE_API_KEY": ""}
        cmd = [sys.executable, "-m", "serving", "--model", str(model_dir), "--load-format",
               "dummy", "--served-model-name", "tiny", "--no-embedding-model",
               "--max-model-len", "8192", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(data_dir)]
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

    def measure(self, max_tokens: int) -> float:
        """CPU milliseconds per streamed token."""
        before = cpu_seconds(self.proc.pid)
        tokens = self.stream(max_tokens)
        if tokens != max_tokens:
            raise RuntimeError(f"asked for {max_tokens} tokens, got {tokens}")
        return (cpu_seconds(self.proc.pid) - before) * 1e3 / tokens

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
            per_token: dict[str, dict[int, list[float]]] = {
                str(c): {n: [] for n in args.lengths} for c in checkouts}
            for _ in range(args.repeats):
                for n in args.lengths:
                    for s in servers:
                        per_token[str(s.checkout)][n].append(s.measure(n))
        finally:
            for s in servers:
                s.stop()
    rows = []
    print(f"{'checkout':<40} " + " ".join(f"{n:>9} tok" for n in args.lengths) +
          f"  {args.lengths[-1]}/{args.lengths[0]}")
    for checkout, by_len in per_token.items():
        medians = {n: statistics.median(v) for n, v in by_len.items()}
        ratio = medians[args.lengths[-1]] / medians[args.lengths[0]]
        print(f"{checkout:<40} " + " ".join(f"{medians[n]:>9.3f} ms" for n in args.lengths) +
              f"  {ratio:.3f}")
        rows.append({"checkout": checkout, "ms_per_token_median": medians,
                     "ms_per_token_all": by_len, "long_over_short": ratio})
    conditions: dict[str, Any] = {
        "model": "tiny random Llama (dummy weights, byte vocabulary)", "config": TINY,
        "request": "streamed /v1/completions, temperature 0, ignore_eos, one at a time",
        "metric": "server process user+system CPU ms per streamed token, median of repeats",
        "repeats": args.repeats}
    print("saved", save("stream_cost", {"conditions": conditions, "results": rows}))


if __name__ == "__main__":
    main()
