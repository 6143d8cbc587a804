"""engine/core (requests, scheduler, block pool) must stay pure Python: no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# Runs in a fresh interpreter: `engine`'s own __init__ imports the whole engine (torch
# included), so the package is stubbed to load only what engine/core imports itself, and
# torch is blocked so that any import of it raises.
_PROBE = f"""
import sys, types
sys.modules["torch"] = None
pkg = types.ModuleType("engine")
pkg.__path__ = [{str(ROOT / "engine")!r}]
sys.modules["engine"] = pkg
import engine.core.block_manager, engine.core.request, engine.core.scheduler
heavy = sorted(m for m in ("numpy", "xgrammar", "triton") if m in sys.modules)
print(",".join(heavy))
"""


def test_core_imports_without_torch() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                            cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"engine/core pulled in {result.stdout.strip()}"


def test_probe_detects_a_torch_import(tmp_path: Path) -> None:
    """The probe itself fails when a module does import torch (so the test above can fail)."""
    probe = _PROBE.replace("import engine.core.block_manager,", "import engine.worker.sampler, engine.core.block_manager,")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=ROOT, check=False)
    assert result.returncode != 0
    assert "torch" in result.stderr
