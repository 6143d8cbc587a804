"""Every GPU-only check and benchmark of the kernels issue, in one call.

    python -m benchmarks.gpu_suite            # on a machine with CUDA

1. the tests marked `gpu` (kernels at real sizes, Triton path == reference path on SmolLM2,
   CUDA graphs == eager, FP8 perplexity within 2% of bf16);
2. benchmarks/kernels.py: FP8 GEMM and decode attention against torch and the HBM ceiling;
3. batch-1 decode of a Llama-3.1-8B-shaped model (dummy weights) in bf16 and FP8, with the
   fraction of the memory roofline.
Results land in benchmarks/results/ as JSON; the exit status is non-zero if any step failed.
"""

from __future__ import annotations

import subprocess
import sys
import time

import torch

STEPS: list[tuple[str, list[str]]] = [
    ("gpu tests", ["-m", "pytest", "-q", "-m", "gpu", "tests"]),
    ("kernel benchmarks", ["-m", "benchmarks.kernels"]),
    *[(f"8B decode {name}", ["-m", "benchmarks.latency", "--model", "llama-3.1-8b",
                             "--load-format", "dummy", "--device", "cuda", "--dtype", "bfloat16",
                             "--prompt-len", "512", "--decode-len", "128", *extra])
      for name, extra in (("bf16", []), ("fp8", ["--quantization", "fp8"]))],
]


def main() -> int:
    if not torch.cuda.is_available():
        print("benchmarks.gpu_suite needs CUDA; nothing was run", file=sys.stderr)
        return 2
    failed = []
    for name, args in STEPS:
        print(f"==== {name}: python {' '.join(args)}", flush=True)
        start = time.perf_counter()
        code = subprocess.run([sys.executable, *args], check=False).returncode
        print(f"==== {name}: exit {code} in {time.perf_counter() - start:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    print("failed: " + ", ".join(failed) if failed else "all steps passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
