"""Command line: `python -m engine generate --model M --prompt P [--chat]`.

Without --prompt it reads prompts from stdin, one per line, until EOF (an interactive chat
when --chat is given, keeping the conversation).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from engine.llm import LLM
from engine.sampling_params import SamplingParams


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate text from a prompt or a chat message")
    gen.add_argument("--model", default="smollm2-135m-instruct",
                     help="registered name, HF-style folder or .gguf file")
    gen.add_argument("--prompt", help="the prompt; omit to read prompts from stdin")
    gen.add_argument("--chat", action="store_true", help="treat prompts as user chat messages")
    gen.add_argument("--system", help="system message for --chat")
    gen.add_argument("--max-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--dtype", default="float32")
    gen.add_argument("--device", default="cpu")
    gen.add_argument("--max-model-len", type=int, default=None)
    gen.add_argument("--quantization", choices=["fp8", "int8", "none"], default=None)
    gen.add_argument("--load-format", choices=["auto", "dummy"], default="auto")
    gen.add_argument("--kernel-backend", choices=["auto", "torch", "triton"], default="auto")
    gen.add_argument("--tensor-parallel-size", type=int, default=1,
                     help="split the model over N processes (GPUs on CUDA)")
    gen.add_argument("-v", "--verbose", action="store_true", help="log loading details")
    return parser


def run_generate(args: argparse.Namespace) -> None:
    params = SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, seed=args.seed,
    )
    start = time.perf_counter()
    llm = LLM(args.model, dtype=args.dtype, device=args.device, max_model_len=args.max_model_len,
              quantization=args.quantization, load_format=args.load_format,
              kernel_backend=args.kernel_backend,
              tensor_parallel_size=args.tensor_parallel_size)
    print(f"[loaded {args.model} in {time.perf_counter() - start:.1f}s]", file=sys.stderr)
    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    prompts = [args.prompt] if args.prompt is not None else (line.rstrip("\n") for line in sys.stdin)
    for prompt in prompts:
        if args.chat:
            history.append({"role": "user", "content": prompt})
            text = llm.chat(history, params)[0].outputs[0].text
            history.append({"role": "assistant", "content": text})
        else:
            text = llm.generate(prompt, params)[0].outputs[0].text
        print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        run_generate(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
