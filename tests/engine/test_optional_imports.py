"""The engine imports on a machine without the feature-only packages (the offline GPU image
lacks xgrammar, pydantic, gguf, jsonschema and qdrant-client)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MISSING = ("xgrammar", "pydantic", "gguf", "jsonschema", "qdrant_client")

_PROBE = f"""
import sys
for name in {MISSING!r}:
    sys.modules[name] = None  # any import of it raises ImportError
import engine
from engine import LLM, AsyncEngine, SamplingParams
import benchmarks.latency, benchmarks.kernels
"""


def test_engine_imports_without_feature_packages() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                            cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_probe_fails_when_a_blocked_package_is_imported() -> None:
    probe = _PROBE + "import engine.guided.compiler\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=ROOT, check=False)
    assert result.returncode != 0 and "xgrammar" in result.stderr
