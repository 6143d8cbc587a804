"""Batch-1 latency: prompt (prefill) tokens/s and decode tokens/s for one model.

    python -m benchmarks.latency --model smollm2-135m-instruct --prompt-len 128 --decode-len 64
    python -m benchmarks.latency --model llama-3.1-8b --load-format dummy --device cuda \
        --dtype bfloat16 [--quantization fp8]

Batch-1 decode reads every weight once per token, so it also reports the fraction of the
memory roofline: bytes of weights per token x tokens/s / measured copy bandwidth.
"""

from __future__ import annotations

import argparse
import statistics
import time

from tqdm import tqdm

from benchmarks.common import memory_bandwidth_gbps, save
from engine import LLM, SamplingParams


def timed(llm: LLM, prompt: list[int], max_tokens: int) -> float:
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    start = time.perf_counter()
    out = llm.generate(prompt, params)[0].outputs[0]
    elapsed = time.perf_counter() - start
    if len(out.token_ids) != max_tokens:
        raise RuntimeError(f"expected {max_tokens} tokens, got {len(out.token_ids)}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--decode-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load-format", default="auto", choices=["auto", "dummy"])
    parser.add_argument("--quantization", choices=["fp8"])
    parser.add_argument("--kernel-backend", default="auto", choices=["auto", "torch", "triton"])
    parser.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    args = parser.parse_args()

    # No prefix cache: every repeat must compute its prompt again.
    llm = LLM(args.model, dtype=args.dtype, device=args.device, enable_prefix_caching=False,
              load_format=args.load_format, quantization=args.quantization,
              kernel_backend=args.kernel_backend, enforce_eager=args.enforce_eager,
              max_num_seqs=1, max_model_len=args.prompt_len + args.decode_len + 16)
    vocab = llm.model_config.vocab_size
    prompt = [(i * 7919 + 13) % vocab for i in range(args.prompt_len)]  # fixed, not random
    timed(llm, prompt, 2)  # warm-up
    prefill, total = [], []
    for _ in tqdm(range(args.repeats), desc="runs"):
        prefill.append(timed(llm, prompt, 1))
        total.append(timed(llm, prompt, args.decode_len))
    t_prefill, t_total = statistics.median(prefill), statistics.median(total)
    prompt_tps = args.prompt_len / t_prefill
    decode_tps = (args.decode_len - 1) / (t_total - t_prefill)
    model = llm.llm_engine.core.runner.model
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if model.lm_head is not None:  # an untied embedding table is read one row per token
        weight_bytes -= model.embed_tokens.weight.numel() * model.embed_tokens.weight.element_size()
    bandwidth = memory_bandwidth_gbps(llm.llm_engine.core.device)
    record = {
        "benchmark": "latency",
        "model": args.model, "dtype": args.dtype, "parameters": params,
        "load_format": args.load_format, "quantization": args.quantization,
        "kernels": llm.llm_engine.core.kernels_kind, "cuda_graphs": llm.llm_engine.core.runner.graphs is not None,
        "prompt_len": args.prompt_len, "decode_len": args.decode_len, "repeats": args.repeats,
        "prompt_tokens_per_s": round(prompt_tps, 1),
        "decode_tokens_per_s": round(decode_tps, 2),
        "ms_per_output_token": round(1000 / decode_tps, 2),
        # Batch-1 decode reads every weight once per token: the effective weight bandwidth.
        "weight_bytes_per_token": weight_bytes,
        "effective_weight_GBps": round(decode_tps * weight_bytes / 1e9, 2),
        "measured_copy_GBps": round(bandwidth, 1),
        "roofline_fraction": round(decode_tps * weight_bytes / 1e9 / bandwidth, 3),
    }
    path = save("latency", record)
    for key in ("prompt_tokens_per_s", "decode_tokens_per_s", "ms_per_output_token",
                "effective_weight_GBps", "measured_copy_GBps", "roofline_fraction"):
        print(f"{key:>24}: {record[key]}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
