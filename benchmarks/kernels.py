"""Kernel microbenchmarks on a GPU, each against its ceiling and the best library call.

FP8 GEMM (W8A8, per-token x per-channel scales, bf16 out) at Llama-3.1-8B projection shapes:
TFLOP/s of our Triton GEMM against torch._scaled_mm on the same quantized inputs and against
bf16 F.linear; % of the measured HBM bandwidth for M <= 16 (memory-bound decode) and % of
_scaled_mm's speed for M >= 1024. Then decode attention (benchmarks/kernel_attention.py):
GB/s over a batch x context sweep against SDPA and the copy bandwidth. Times are
triton.testing.do_bench medians (L2 flushed).

    python -m benchmarks.kernels                 # needs CUDA; saves benchmarks/results/kernels-*.json
    python -m benchmarks.kernels --dry-run       # CPU smoke test: one tiny shape, interpreter
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import memory_bandwidth_gbps, save

# name -> (N, K) of y = x @ W.T
LLAMA_8B = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096),
            "down": (4096, 14336)}
M_VALUES = (1, 16, 64, 256, 1024, 4096)
MEMORY_BOUND_M = 16  # at or below: report % of HBM bandwidth
COMPUTE_BOUND_M = 1024  # at or above: report % of torch._scaled_mm


def time_ms(fn: Callable[[], Any]) -> float:
    """Median milliseconds: do_bench on CUDA; on the CPU (dry run: the interpreter, slow and
    meaningless as a number) a warm-up and one timed call."""
    if torch.cuda.is_available():
        import triton.testing

        return triton.testing.do_bench(fn, return_mode="median")
    fn()
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


def _scaled_mm(a: torch.Tensor, a_scale: torch.Tensor, wq: torch.Tensor,
               w_scale: torch.Tensor) -> Callable[[], torch.Tensor] | None:
    """torch._scaled_mm with per-row/per-column scales, or None where this build lacks it."""
    def call() -> torch.Tensor:
        return torch._scaled_mm(a, wq.t(), scale_a=a_scale[:, None], scale_b=w_scale[None, :],
                                out_dtype=torch.bfloat16)
    try:
        call()
    except (RuntimeError, NotImplementedError) as exc:
        print(f"torch._scaled_mm unavailable here: {str(exc).splitlines()[0]}", file=sys.stderr)
        return None
    return call


def bench_fp8(bandwidth: float, shapes: dict[str, tuple[int, int]] | None = None,
              m_values: tuple[int, ...] = M_VALUES) -> list[dict[str, Any]]:
    """One row per (shape, M): our GEMM, our fp8_linear (with the activation quant),
    _scaled_mm and bf16 F.linear, as ms and TFLOP/s, plus the ceiling fractions."""
    from kernels.reference import quantize_fp8_weight

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for name, (n, k) in (shapes or LLAMA_8B).items():
        w = torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
        wq, w_scale = quantize_fp8_weight(w)
        for m in m_values:
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
            rows.append(_fp8_row(name, m, n, k, _fp8_times(x, w, wq, w_scale), bandwidth))
    return rows


def _fp8_times(x: torch.Tensor, w: torch.Tensor, wq: torch.Tensor,
               w_scale: torch.Tensor) -> dict[str, float]:
    from kernels import fp8_matmul, fp8_quant

    a, a_scale = fp8_quant.quantize_fp8_per_token(x)
    times = {
        "ours": time_ms(lambda: fp8_matmul.fp8_gemm(a, a_scale, wq, w_scale)),
        "ours_with_quant": time_ms(lambda: fp8_matmul.fp8_linear(x, wq, w_scale)),
        "bf16_linear": time_ms(lambda: F.linear(x, w)),
    }
    library = _scaled_mm(a, a_scale, wq, w_scale)
    if library is not None:
        times["scaled_mm"] = time_ms(library)
    return times


def _fp8_row(name: str, m: int, n: int, k: int, times: dict[str, float],
             bandwidth: float) -> dict[str, Any]:
    flops = 2 * m * n * k
    # fp8 weight + fp8 activations + bf16 output + fp32 scales
    nbytes = n * k + m * k + 2 * m * n + 4 * (m + n)
    row: dict[str, Any] = {"section": "fp8_gemm", "shape": name, "M": m, "N": n, "K": k}
    for key, ms in times.items():
        row[f"{key}_ms"] = round(ms, 5)
        row[f"{key}_tflops"] = round(flops / (ms / 1000) / 1e12, 2)
    row["ours_gbps"] = round(nbytes / (times["ours"] / 1000) / 1e9, 1)
    if m <= MEMORY_BOUND_M:
        row["ours_pct_hbm"] = round(100 * nbytes / (times["ours"] / 1000) / bandwidth, 1)
    if m >= COMPUTE_BOUND_M and "scaled_mm" in times:
        row["ours_pct_scaled_mm"] = round(100 * times["scaled_mm"] / times["ours"], 1)
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    """One aligned table per section, with the union of the sections' columns."""
    for section in dict.fromkeys(r["section"] for r in rows):
        part = [r for r in rows if r["section"] == section]
        cols = list(dict.fromkeys(c for r in part for c in r if c != "section"))
        widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in part)) for c in cols}
        print(f"\n== {section} ==")
        print("  ".join(c.rjust(widths[c]) for c in cols))
        for r in part:
            print("  ".join(str(r.get(c, "")).rjust(widths[c]) for c in cols))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU smoke test under TRITON_INTERPRET=1: one tiny shape, no JSON")
    parser.add_argument("--m", type=lambda v: tuple(int(x) for x in v.split(",")),
                        default=M_VALUES, help="comma-separated GEMM M values (default %(default)s)")
    args = parser.parse_args()
    if args.dry_run:
        # Read when the kernels are decorated: set before kernels/ is imported (in bench_fp8).
        os.environ["TRITON_INTERPRET"] = "1"
        torch.set_num_threads(1)
        device, shapes, m_values = "cpu", {"tiny": (200, 300)}, (1, 33)
    elif not torch.cuda.is_available():
        sys.exit("benchmarks/kernels.py needs a CUDA GPU (try --dry-run for a CPU smoke test)")
    else:
        device, shapes, m_values = "cuda", LLAMA_8B, args.m

    gbps = memory_bandwidth_gbps(device, (2 << 30) if device == "cuda" else (1 << 25))
    bandwidth = gbps * 1e9
    print(f"measured copy bandwidth: {gbps:.1f} GB/s")
    rows = bench_fp8(bandwidth, shapes, m_values)
    print_table(rows)
    if not args.dry_run:  # decode attention: GPU only (the interpreter cannot time it)
        from benchmarks.kernel_attention import bench_attention, print_attention_table

        attention_rows = bench_attention(gbps)
        print_attention_table(attention_rows, gbps)
        rows += attention_rows
    if not args.dry_run:
        path = save("kernels", {"benchmark": "kernels", "bandwidth_gbps": round(bandwidth / 1e9, 1),
                                "rows": rows})
        print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
