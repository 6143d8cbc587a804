"""Tensor parallelism: tokens/s at TP=1, 2, ... and, on the CPU, the share of a step that
rank 0 spends in collectives (all-reduces, the LM head's all-gather, the step broadcast;
waiting for the slower rank included).

    python -m benchmarks.tp                      # a 160M shape on the CPU, TP=1 vs TP=2
    python -m benchmarks.tp --model llama-3.1-8b --load-format dummy --device cuda \\
        --dtype bfloat16 --sizes 1,2,4,8 --batch 32 --prompt 512 --tokens 128   # GPUs

Each size runs in a process of its own (one tensor-parallel group per process). On CUDA
the collectives are asynchronous, so the communication share is reported on the CPU only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import save

WRAPPED = ("all_reduce", "gather_last_dim", "send")
# The CPU's default: a SmolLM2-360M-like shape that splits in two (SmolLM2-135M's 9 heads
# do not), random weights.
CPU_SHAPE = {"vocab_size": 49152, "hidden_size": 960, "intermediate_size": 2560,
             "num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 4,
             "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}


def timed(fn: Callable[..., Any], total: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - start
    return wrapper


def run_one(args: argparse.Namespace, size: int) -> dict[str, Any]:
    from engine import LLM, SamplingParams

    engine_args: dict[str, Any] = {"load_format": args.load_format,
                                   "max_num_seqs": max(args.batch, 1),
                                   "max_model_len": args.prompt + args.tokens + 16}
    if size > 1:  # (TP=1 passes nothing: the same run works on a checkout without TP)
        engine_args["tensor_parallel_size"] = size
    if args.quantization:
        engine_args["quantization"] = args.quantization
    if args.device == "cpu":
        engine_args["kv_cache_bytes"] = 256 << 20
    llm = LLM(args.model, dtype=args.dtype, device=args.device, **engine_args)
    try:
        vocab = llm.model_config.vocab_size
        prompts = [[(17 * i + 31 * j) % (vocab - 300) + 256 for j in range(args.prompt)]
                   for i in range(args.batch)]
        params = SamplingParams(max_tokens=args.tokens, temperature=0, ignore_eos=True)
        llm.generate(prompts[:1], SamplingParams(max_tokens=4, ignore_eos=True))  # warm-up
        comm_time = [0.0]
        core = llm.llm_engine.core
        tp = getattr(core, "tp", None)
        if tp is not None and args.device == "cpu":
            comm = tp.comm
            for name in WRAPPED:
                setattr(comm, name, timed(getattr(comm, name), comm_time))
        steps0 = core.stats.steps
        start = time.perf_counter()
        out = llm.generate(prompts, params)
        wall = time.perf_counter() - start
        generated = sum(len(o.outputs[0].token_ids) for o in out)
        return {"tp": size, "wall_s": round(wall, 3), "steps": core.stats.steps - steps0,
                "output_tokens_per_s": round(generated / wall, 1),
                "total_tokens_per_s": round((generated + args.batch * args.prompt) / wall, 1),
                "comm_share": (round(comm_time[0] / wall, 3)
                               if tp is not None and args.device == "cpu" else None)}
    finally:
        if tp is not None:
            llm.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", help="default: CPU_SHAPE with random weights")
    p.add_argument("--load-format", default="auto", choices=["auto", "dummy"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--quantization", default=None)
    p.add_argument("--sizes", default="1,2")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: this size only
    args = p.parse_args()
    if args.model is None:
        folder = Path(tempfile.mkdtemp(prefix="tp-bench-"))
        (folder / "config.json").write_text(json.dumps(CPU_SHAPE))
        args.model, args.load_format = str(folder), "dummy"
        sys.argv += ["--model", args.model, "--load-format", "dummy"]
    if args.one is not None:
        print(json.dumps(run_one(args, args.one)), flush=True)
        return
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        child = [sys.executable, "-m", "benchmarks.tp", *sys.argv[1:], "--one", str(size)]
        done = subprocess.run(child, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"TP={size} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(row)
        print(row, flush=True)
    if not results:
        sys.exit(1)
    path = save("tp", {"args": {k: v for k, v in vars(args).items() if k != "one"},
                       "results": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
