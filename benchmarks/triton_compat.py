"""Check the kernels against the GPU image's Triton (3.6) as well as the pinned one, on the CPU.

    python -m benchmarks.triton_compat                  # triton 3.6.0 into .triton-compat/
    python -m benchmarks.triton_compat --version 3.6.0 --skip-tests

Installs that Triton alone (no dependencies: this venv's torch stays) into a git-ignored
folder put first on PYTHONPATH, then (1) compiles the CI cases for every target with it
(python -m benchmarks.kernel_report --quick) and (2) runs tests/kernels under its
interpreter. Not in CI: the download is ~200 MB and the run a few minutes. torch stays at the
pinned version: the GPU image's torch 2.11 is a multi-GB CUDA build.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def install(version: str, dest: Path) -> None:
    marker = dest / f"triton-{version}.dist-info"
    if marker.exists():
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade",
                    "--target", str(dest), f"triton=={version}"], check=True)


def run(args: list[str], env: dict[str, str]) -> int:
    print(f"==== python {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--version", default="3.6.0")
    parser.add_argument("--dest", type=Path, default=ROOT / ".triton-compat")
    parser.add_argument("--skip-tests", action="store_true", help="compile check only")
    args = parser.parse_args(argv)
    install(args.version, args.dest)
    path = os.pathsep.join([str(args.dest), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "TRITON_DEFAULT_FP_FUSION": "1"}
    check = [f"import triton; assert triton.__version__ == {args.version!r}, triton.__version__"]
    codes = [run(["-c", *check], env), run(["-m", "benchmarks.kernel_report", "--quick"], env)]
    if not args.skip_tests:
        codes.append(run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/kernels"], env))
    print("triton", args.version, "OK" if not any(codes) else f"FAILED: exit codes {codes}")
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
