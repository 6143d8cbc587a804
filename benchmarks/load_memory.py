"""Peak RAM while loading a model, as a multiple of the model's size in the compute dtype.

    python -m benchmarks.load_memory --model smollm2-135m-instruct --dtype bfloat16

The baseline is the process's RSS after imports; the peak is the kernel's high-water mark
(ru_maxrss), so the figure includes every temporary the loader makes.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from benchmarks.common import save
from engine.config import parse_dtype
from engine.model.loader import load_model


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    baseline = rss_mib()
    start = time.perf_counter()
    loaded = load_model(args.model, parse_dtype(args.dtype), torch.device("cpu"))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    size = sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**20
    record = {
        "benchmark": "load_memory", "model": args.model, "dtype": args.dtype,
        "model_mib": round(size, 1), "baseline_rss_mib": round(baseline, 1),
        "peak_rss_mib": round(peak, 1), "load_seconds": round(seconds, 2),
        "peak_over_model": round((peak - baseline) / size, 2),
    }
    path = save("load_memory", record)
    print(f"model {size:.0f} MiB, peak {peak - baseline:.0f} MiB over baseline "
          f"= {record['peak_over_model']}x, loaded in {seconds:.1f}s; saved {path}")


if __name__ == "__main__":
    main()
