"""Side by side with llama.cpp's server: same GGUF, same chat prompts, same client.

    python -m benchmarks.peers [--llama-server PATH] [--concurrency 1 4 16 32]

Starts `python -m serving` on the GGUF (and, with --llama-server, `llama-server -t THREADS
-np MAX_CONCURRENCY` on the same file), then for each concurrency level sends
`rounds * concurrency` streamed chat completions (temperature 0, ignore_eos, --max-tokens
output tokens), at most `concurrency` in flight. The servers run one after the other, never
together. Prints output tok/s, TTFT p50 and inter-token p50 for both, with the ratios, and
saves JSON and a PNG (output tok/s vs concurrency) under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from benchmarks.common import ms_stats, save
from benchmarks.serving import Result, free_port, stream_one, wait_healthy

QUESTIONS = [
    "What is the capital of France?", "Write a short poem about the sea.",
    "Explain how a bicycle works.", "List three uses of copper.",
    "Why is the sky blue?", "Describe a cat to someone who has never seen one.",
    "What are the rules of chess?", "Summarize the history of Rome in a paragraph.",
]


async def one(session: aiohttp.ClientSession, url: str, model: str, question: str,
              max_tokens: int) -> Result:
    body = {"model": model, "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    # llama-server gzips event streams unless told not to, and then holds back their end.
    return await stream_one(session, url, "/v1/chat/completions", body,
                            {"Accept-Encoding": "identity"})


async def level(url: str, concurrency: int, rounds: int, max_tokens: int) -> dict:
    limit = asyncio.Semaphore(concurrency)

    async def guarded(session: aiohttp.ClientSession, i: int) -> Result:
        async with limit:
            return await one(session, url, model, QUESTIONS[i % len(QUESTIONS)], max_tokens)

    # A fresh connection per request: reusing a kept-alive one races the server closing it
    # (llama-server does, between levels: aiohttp's "Server disconnected" on the next send).
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        async with session.get(f"{url}/v1/models") as resp:
            model = (await resp.json())["data"][0]["id"]
        await one(session, url, model, QUESTIONS[0], 8)  # warm-up
        start = time.perf_counter()
        results = await asyncio.gather(*(guarded(session, i) for i in range(rounds * concurrency)))
        elapsed = time.perf_counter() - start
    itl = [b - a for r in results for a, b in zip(r.chunk_times, r.chunk_times[1:])]
    out = sum(r.output_tokens for r in results)
    return {"concurrency": concurrency, "requests": len(results), "output_tokens": out,
            "elapsed_s": round(elapsed, 2), "output_tok_s": round(out / elapsed, 1),
            "ttft_ms": ms_stats([r.ttft for r in results]), "itl_ms": ms_stats(itl)}


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


def run_server(name: str, cmd: list[str], port: int, args: argparse.Namespace) -> list[dict]:
    log = Path(f"/tmp/peers-{name}.log")
    proc = start(cmd, log)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(asyncio.wait_for(wait_healthy(url, proc), 600))
        rows = []
        for c in args.concurrency:
            rounds = max(1, args.min_requests // c) if c < args.min_requests else 1
            row = asyncio.run(level(url, c, rounds, args.max_tokens))
            print(f"{name:>9} c={c:<3} {row['output_tok_s']:>7.1f} tok/s  TTFT p50 "
                  f"{row['ttft_ms'].get('p50')} ms  ITL p50 {row['itl_ms'].get('p50')} ms",
                  flush=True)
            rows.append(row)
        return rows
    finally:
        proc.terminate()
        proc.wait(30)


def table(ours: list[dict], peer: list[dict] | None) -> str:
    header = ("| concurrent streams | ours, output tok/s | llama.cpp, output tok/s | ours / "
              "llama.cpp | TTFT p50 ours / llama.cpp | inter-token p50 ours / llama.cpp |")
    lines = [header, "|---|---|---|---|---|---|"]
    for i, o in enumerate(ours or peer or []):
        p = peer[i] if peer else None
        if not ours:  # llama-server alone
            lines.append(f"| {o['concurrency']} | - | {o['output_tok_s']} | - | "
                         f"- / {o['ttft_ms']['p50']} ms | - / {o['itl_ms']['p50']} ms |")
            continue
        if p is None:
            lines.append(f"| {o['concurrency']} | {o['output_tok_s']} | - | - | "
                         f"{o['ttft_ms']['p50']} / - ms | {o['itl_ms']['p50']} / - ms |")
            continue
        lines.append(
            f"| {o['concurrency']} | {o['output_tok_s']} | {p['output_tok_s']} | "
            f"{o['output_tok_s'] / p['output_tok_s']:.2f} | {o['ttft_ms']['p50']} / "
            f"{p['ttft_ms']['p50']} ms | {o['itl_ms']['p50']} / {p['itl_ms']['p50']} ms |")
    return "\n".join(lines)


def plot(ours: list[dict], peer: list[dict] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in (("ours", ours), ("llama.cpp", peer)):
        if rows:
            ax.plot([r["concurrency"] for r in rows], [r["output_tok_s"] for r in rows],
                    marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("output tokens/s")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GGUF file (default: SmolLM2 Q4_1)")
    parser.add_argument("--llama-server", type=Path)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--min-requests", type=int, default=4,
                        help="each level sends at least this many requests (whole waves)")
    parser.add_argument("--threads", type=int, default=2, help="llama-server -t")
    parser.add_argument("--quantization", default=None, help="our --quantization")
    parser.add_argument("--skip-ours", action="store_true", help="llama-server only")
    args = parser.parse_args(argv)
    if args.model is None:
        from weights import model_path

        args.model = str(model_path("smollm2-135m-instruct"))
    top = max(args.concurrency)
    port = free_port()
    ours_cmd = [sys.executable, "-m", "serving", "--model", args.model, "--port", str(port),
                "--max-model-len", "1024", "--max-num-seqs", str(top), "--log-level", "warning"]
    if args.quantization:
        ours_cmd += ["--quantization", args.quantization]
    ours = [] if args.skip_ours else run_server("ours", ours_cmd, port, args)
    peer = None
    if args.llama_server:
        port = free_port()
        peer = run_server("llama.cpp", [
            str(args.llama_server), "-m", args.model, "-t", str(args.threads), "-np", str(top),
            "-c", str(top * 512), "--host", "127.0.0.1", "--port", str(port)], port, args)
    print(table(ours, peer))
    # Our server inherits this environment: its torch threads are OMP_NUM_THREADS or, unset,
    # torch's default (the machine's cores), which is what `python -m serving` uses.
    record = {"loadavg_1m": os.getloadavg()[0], "model": args.model, "max_tokens": args.max_tokens, "threads": args.threads,
              "ours_omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
              "quantization": args.quantization, "ours": ours, "llama_cpp": peer}
    json_path = save("peers", record)
    png = json_path.with_suffix(".png")
    plot(ours, peer, png)
    print("saved", json_path, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
