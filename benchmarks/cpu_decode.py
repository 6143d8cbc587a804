"""Batch-1 (and small-batch) decode steps on the CPU: float32 against int8 weights, where the
time goes (GEMMs, attention, the rest = host overhead), and the memory roofline.

    python -m benchmarks.cpu_decode [--batch 1] [--context 40] [--steps 20]

Both models are loaded once; their decode steps run interleaved (f32, int8, f32, ...) so a
noisy shared machine slows both alike. Roofline: weight bytes read per step / the copy
bandwidth measured here (benchmarks.common.memory_bandwidth_gbps). The breakdown comes
from torch.profiler over a few steps: self CPU time of GEMM ops and of the attention
function; the remainder of the step is host overhead (Python, small ops, dispatch).
`aten_calls` counts the aten ops one step issues (a TorchDispatchMode sees each top-level
call): deterministic where the times are noisy, so a cut in host overhead shows as a number.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.common import memory_bandwidth_gbps, save
from engine.model.int8 import Int8Linear
from engine.model.loader import load_model
from engine.worker.cpu_ops import cpu_ops
from engine.worker.model_runner import ModelRunner, SequenceChunk
from kernels import reference_ops
from weights import model_path

GEMM_OPS = ("aten::mm", "aten::addmm", "quantized::linear_dynamic", "aten::matmul", "aten::bmm")


def weight_bytes(model: nn.Module) -> int:
    """Bytes the GEMMs read per step (the embedding table is looked up, not read whole)."""
    total = 0
    for m in model.modules():
        if isinstance(m, Int8Linear):
            total += m.weight_bytes
        elif isinstance(m, nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
    if model.lm_head is None:
        total += model.embed_tokens.weight.numel() * model.embed_tokens.weight.element_size()
    return total


class Decoder:
    def __init__(self, quantization: str, batch: int, context: int, ops: object) -> None:
        loaded = load_model(model_path("smollm2-135m-instruct"), torch.float32,
                            torch.device("cpu"), ops, quantization=quantization)
        self.model = loaded.model
        blocks = -(-(context + 512) // 16)
        self.runner = ModelRunner(self.model, num_blocks=blocks * batch, block_size=16,
                                  device=torch.device("cpu"))
        self.tables = [list(range(i * blocks, (i + 1) * blocks)) for i in range(batch)]
        prompt = list(range(100, 100 + context))
        self.runner.execute([SequenceChunk(prompt, 0, t) for t in self.tables])
        self.pos = context

    def step(self) -> None:
        self.runner.execute([SequenceChunk([42], self.pos, t) for t in self.tables])
        self.pos += 1


class _OpCounter(TorchDispatchMode):
    """Counts the aten calls that reach the dispatcher's Python key (ops called by other
    ops inside this handler are not seen: top-level calls only)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def aten_calls(dec: Decoder) -> int:
    """aten calls of one decode step."""
    with _OpCounter() as counter:
        dec.step()
    return counter.count


def breakdown(dec: Decoder, steps: int) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            dec.step()
        wall = (time.perf_counter() - start) / steps
    gemm = attn = 0.0
    for e in prof.key_averages():
        if e.key in GEMM_OPS:
            gemm += e.self_cpu_time_total
        elif "attention" in e.key or e.key in ("aten::_softmax", "aten::index_select"):
            attn += e.self_cpu_time_total
    gemm, attn = gemm / steps / 1000, attn / steps / 1000
    return {"step_ms_profiled": round(1000 * wall, 2), "gemm_ms": round(gemm, 2),
            "attention_ms": round(attn, 2), "other_ms": round(1000 * wall - gemm - attn, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--context", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's; 1 is steadier on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bw = memory_bandwidth_gbps("cpu")
    # int8 with the plain references shows what CpuOps' host-side cuts save.
    decs = {"float32": Decoder("none", args.batch, args.context, cpu_ops),
            "int8": Decoder("int8", args.batch, args.context, cpu_ops),
            "int8_reference_ops": Decoder("int8", args.batch, args.context, reference_ops)}
    times: dict[str, list[float]] = {k: [] for k in decs}
    for _ in range(args.steps):
        for name, dec in decs.items():
            start = time.perf_counter()
            dec.step()
            times[name].append(time.perf_counter() - start)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
          f"context {args.context}, {args.steps} interleaved steps; copy bandwidth {bw:.1f} GB/s")
    rows = {}
    for name, dec in decs.items():
        ms = 1000 * statistics.median(times[name])
        wb = weight_bytes(dec.model)
        roof_ms = wb / (bw * 1e9) * 1000
        row = {"step_ms_p50": round(ms, 2), "tok_s": round(1000 * args.batch / ms, 1),
               "weight_mb": round(wb / 1e6, 1), "roofline_ms": round(roof_ms, 2),
               "of_roofline": round(roof_ms / ms, 2), "aten_calls": aten_calls(dec),
               **breakdown(dec, 5)}
        rows[name] = row
        print(name, row, flush=True)
    print(f"int8 / float32 tok/s: {rows['int8']['tok_s'] / rows['float32']['tok_s']:.2f}; "
          f"CpuOps / reference ops (int8): "
          f"{rows['int8']['tok_s'] / rows['int8_reference_ops']['tok_s']:.2f}")
    print("saved", save("cpu_decode", {"batch": args.batch, "context": args.context,
                                       "steps": args.steps, "copy_gbps": round(bw, 1),
                                       "loadavg_1m": os.getloadavg()[0],
                                       "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
