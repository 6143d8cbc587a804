"""Every GPU-only check and benchmark, in one call that fits in 8 minutes on one H100.

    GPU_SUITE_OUT=/some/dir python -m benchmarks.gpu_suite     # on the GPU machine
    python -m benchmarks.gpu_suite --dry-run                    # here: imports and plan only

Steps, in order of importance (a failing step never stops the ones after it; each has a
wall-clock budget, so a hang costs its budget, not the run):
1. correctness: the tests marked `gpu` (Triton == reference on SmolLM2 greedy, CUDA graphs ==
   eager, FP8 perplexity vs bf16, the kernels at real sizes);
2. kernels: FP8 GEMM TFLOP/s vs torch._scaled_mm at M = 1, 16, 128, 1024, 4096 on the 8B
   shapes, then decode attention GB/s vs the measured copy bandwidth;
3. batch-1 decode tok/s of the Llama-3.1-8B shape (dummy weights), bf16 then FP8, with the
   fraction of the memory roofline.
Every result JSON lands in $GPU_SUITE_OUT (default benchmarks/results/gpu-suite-<time>)
with summary.json and summary.txt beside it: at most 8 files. Triton's compile and autotune
results are cached on disk (TRITON_CACHE_AUTOTUNING), so later steps reuse earlier tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
GPU_TESTS = [
    "tests/kernels/test_kernels_gpu.py", "tests/kernels/test_fp8_gpu.py",
    "tests/engine/test_gpu_engine.py", "tests/engine/model/test_fp8_smollm2.py",
]
# Modules the steps import: the dry run imports them with the packages the GPU image lacks
# blocked, so a module-level import of one fails here rather than there.
SUITE_MODULES = ["kernels", "engine", "benchmarks.kernels", "benchmarks.kernel_attention",
                 "benchmarks.latency", "tests.conftest",
                 *(p[:-3].replace("/", ".") for p in GPU_TESTS)]
ABSENT_ON_GPU_IMAGE = ["pydantic", "gguf", "xgrammar", "jsonschema", "qdrant_client"]


@dataclass(frozen=True)
class Step:
    name: str
    args: list[str]
    budget_s: int


def _decode(name: str, extra: list[str], budget_s: int) -> Step:
    return Step(f"8B decode {name}", ["-m", "benchmarks.latency", "--model", "llama-3.1-8b",
                                     "--load-format", "dummy", "--device", "cuda", "--dtype",
                                     "bfloat16", "--prompt-len", "512", "--decode-len", "128",
                                     "--repeats", "2", *extra], budget_s)


# Budgets sum to 450 s: with start-up and the summary, under 8 minutes.
STEPS = [
    Step("correctness", ["-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                         "-o", "addopts=", *GPU_TESTS], 160),
    Step("kernels", ["-m", "benchmarks.kernels", "--m", "1,16,128,1024,4096"], 150),
    _decode("bf16", [], 60),
    _decode("fp8", ["--quantization", "fp8"], 80),
]


def _run(step: Step, out: Path, log: Path) -> dict:
    """Run one step as a subprocess; move the JSON it saved into `out`."""
    before = set(RESULTS.glob("*.json")) if RESULTS.exists() else set()
    print(f"==== {step.name}: python {' '.join(step.args)}", flush=True)
    start = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"\n==== {step.name}\n")
        fh.flush()
        proc = subprocess.Popen([sys.executable, *step.args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            output, _ = proc.communicate(timeout=step.budget_s)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            code = "timeout"
        fh.write(output)
    print(output, end="", flush=True)
    seconds = round(time.perf_counter() - start, 1)
    saved = sorted(set(RESULTS.glob("*.json")) - before) if RESULTS.exists() else []
    files = []
    for path in saved:
        target = out / f"{step.name.replace(' ', '_')}-{path.name}"
        shutil.move(str(path), target)
        files.append(target.name)
    print(f"==== {step.name}: exit {code} in {seconds} s", flush=True)
    return {"step": step.name, "exit": code, "seconds": seconds, "files": files,
            "tail": output.strip().splitlines()[-12:]}


def _headline(record: dict, out: Path) -> list[str]:
    """The numbers that matter from a step's JSON, one line each."""
    lines = []
    for name in record["files"]:
        data = json.loads((out / name).read_text())
        for row in data.get("rows", []):
            if row.get("section") == "fp8_gemm":
                lines.append(f"fp8 {row['shape']:>8} M={row['M']:<5} ours "
                             f"{row.get('ours_tflops')} TFLOP/s, _scaled_mm "
                             f"{row.get('scaled_mm_tflops', 'n/a')}")
            elif "ours_gbs" in row and "context" in row:
                lines.append(f"decode attn b={row['batch']} ctx={row['context']}: "
                             f"{row['ours_gbs']} GB/s = {row['ours_of_hbm']:.0%} of copy")
        if "decode_tokens_per_s" in data or "roofline_fraction" in data:
            lines.append(f"{record['step']}: {data.get('decode_tokens_per_s')} tok/s, "
                         f"roofline {data.get('roofline_fraction')}")
    return lines


def dry_run() -> int:
    """What can be checked without CUDA: the plan, and that every module the steps import
    loads without the packages the GPU image lacks."""
    import importlib

    for name in ABSENT_ON_GPU_IMAGE:
        sys.modules[name] = None  # type: ignore[assignment]  # import now raises ImportError
    failed = []
    for module in SUITE_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            failed.append(f"{module}: {exc}")
    for step in STEPS:
        print(f"{step.budget_s:>4} s  python {' '.join(step.args)}")
    print(f"total budget {sum(s.budget_s for s in STEPS)} s")
    for line in failed:
        print("IMPORT FAILS without the GPU image's missing packages:", line)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dry-run", action="store_true",
                        help="no CUDA needed: print the plan and check the imports")
    parser.add_argument("--only", action="append", help="run only the named step(s)")
    args = parser.parse_args(argv)
    if args.dry_run:
        return dry_run()
    import torch

    if not torch.cuda.is_available():
        print("benchmarks.gpu_suite needs CUDA; try --dry-run", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(os.environ.get("GPU_SUITE_OUT") or RESULTS / f"gpu-suite-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    log = out / "summary.txt"
    start = time.perf_counter()
    records = [_run(s, out, log) for s in STEPS if not args.only or s.name in args.only]
    headlines = [line for r in records for line in _headline(r, out)]
    status = ["passed" if r["exit"] == 0 else f"FAILED ({r['exit']})" for r in records]
    summary = [f"{r['step']}: {s} in {r['seconds']} s" for r, s in zip(records, status)]
    total = round(time.perf_counter() - start, 1)
    text = "\n".join(["== GPU suite summary ==", *summary, *headlines, f"total {total} s"])
    print("\n" + text)
    with log.open("a") as fh:
        fh.write("\n" + text + "\n")
    (out / "summary.json").write_text(json.dumps(
        {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
         "total_s": total, "steps": records, "headlines": headlines}, indent=1) + "\n")
    return 0 if all(r["exit"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
