"""Fetch, here, the wheels the offline GPU image lacks, into the git-ignored .whl/ folder.

    python -m benchmarks.prepare_gpu_wheels            # downloads, then prints the GPU command
    python -m benchmarks.prepare_gpu_wheels --print    # only the command

The GPU machine has Python 3.12, torch 2.11 (CUDA 13), triton 3.6, numpy, safetensors,
sentencepiece, tokenizers, jinja2, aiohttp, prometheus-client and pytest, and no network.
It lacks pydantic, gguf, xgrammar, jsonschema and qdrant-client. The GPU suite needs only:
gguf (the SmolLM2 GGUF loader) with PyYAML (gguf imports it), and tqdm (the latency
benchmark's progress bar). Each wheel comes without dependencies (pip must not resolve torch
or anything else the image already has) for CPython 3.12, manylinux x86_64.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEEL_DIR = ROOT / ".whl"
# Pinned as in pyproject.toml (PyYAML: what gguf 0.19 resolved to here).
WHEELS = ["gguf==0.19.0", "PyYAML==6.0.4", "tqdm==4.70.1"]
CARRY_LIMIT = 64 << 20  # the device tool carries at most 64 MiB, the tree included
# The one command to run on the GPU machine, from the checkout's root. The wheels install
# into a scratch folder (never into the image's site-packages), and the project is used
# from the checkout: `pip install -e .` would try to pull the pinned torch.
GPU_COMMAND = (
    "python -m pip install -q --no-index --no-deps --target /tmp/gpu-deps .whl/*.whl && "
    'PYTHONPATH=".:/tmp/gpu-deps" GPU_SUITE_OUT="${OUT:-benchmarks/results/gpu-suite}" '
    "python -m benchmarks.gpu_suite"
)


def download(dest: Path = WHEEL_DIR) -> list[Path]:
    dest.mkdir(exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps",
         "--python-version", "3.12", "--implementation", "cp", "--platform",
         "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform",
         "any", "--dest", str(dest), *WHEELS],
        check=True,
    )
    return sorted(dest.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--print", action="store_true", help="print the GPU command only")
    args = parser.parse_args(argv)
    if not args.print:
        wheels = download()
        size = sum(w.stat().st_size for w in wheels)
        for w in wheels:
            print(f"{w.stat().st_size / 1e6:7.2f} MB  {w.name}")
        print(f"{size / 1e6:.2f} MB in {WHEEL_DIR}")
        if size > CARRY_LIMIT // 2:
            print("warning: the wheels take over half of what the device tool carries",
                  file=sys.stderr)
    print("\nOn the GPU machine, from the checkout's root:\n  " + GPU_COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
