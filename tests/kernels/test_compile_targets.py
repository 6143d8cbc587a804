"""Every kernel compiles for sm_90 (H100/H200) on this GPU-less machine, and what it compiles
to holds up: shared memory within the target, no spills on the hot path, wgmma and a deep
pipeline for the FP8 GEMM, tensor cores and 128-bit loads for attention.

The test session runs the kernels interpreted (TRITON_INTERPRET=1, read when they are
decorated), so the compiles run in one subprocess without it: `benchmarks.kernel_report
--quick` for sm_90 and sm_89, whose JSON rows the tests read (about 30 s). The report
without --quick compiles every config, dtype and model shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels import fp8_matmul
from kernels.aot.cases import all_cases
from kernels.aot.compile import prune_reason
from kernels.aot.specialize import specialize
from kernels.aot.targets import SM80, SM89, SM90, target_for_capability

ROOT = Path(__file__).resolve().parents[2]
REPRESENTATIVE = [c for c in all_cases() if c.representative]


def _compiled_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("report") / "rows.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.kernel_report", "--quick", "--target", "sm_90",
         "--target", "sm_89", "--jobs", "2", "--json", str(out)],
        cwd=ROOT, env=_compiled_env(), capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def _row(rows: list[dict], kernel: str, target: str = "sm_90", tier: str = "") -> dict:
    return next(r for r in rows if r["kernel"] == kernel and r["target"] == target
                and r["tier"] == tier and r["ci"])


def test_every_family_and_tier_has_a_representative():
    families = {(c.family, c.tier) for c in all_cases()}
    assert families == {(c.family, c.tier) for c in REPRESENTATIVE}
    assert {"fp8_gemm", "decode_attention", "prefill_attention", "rms_norm"} <= {
        f for f, _ in families}


def test_every_case_specializes():
    """Each case names exactly its kernel's parameters (catches a launcher that changed)."""
    for case in all_cases():
        signature, _, _ = specialize(case.kernel, case.args)
        assert list(signature) == case.kernel.arg_names


def test_every_kernel_compiles_for_sm90_within_limits(rows):
    sm90 = [r for r in rows if r["target"] == "sm_90"]
    assert len(sm90) == len(REPRESENTATIVE)
    for r in sm90:
        assert "smem" in r, f"{r['kernel']} {r['config']}: {r['note']}"
        assert r["smem"] <= SM90.smem_bytes
        if r["hot"]:
            assert r["spill"] == 0, f"{r['kernel']} {r['config']} spills {r['spill']} B/thread"


def test_fp8_big_tier_uses_wgmma_with_a_deep_pipeline(rows):
    r = _row(rows, "fp8_gemm", tier="big")
    assert "QGMMA" in r["mma"]  # Hopper fp8 wgmma, not mma.sync
    assert r["pipelined"] != "no" and r["stages"] >= 3
    # The launcher's shared-memory figure (used to prune configs) is the compiler's.
    assert r["smem"] == r["estimate"]


@pytest.mark.parametrize("family", ["decode_attention", "prefill_attention"])
def test_attention_uses_tensor_cores_and_wide_pipelined_loads(rows, family: str):
    r = _row(rows, family)
    assert {"HMMA", "HGMMA"} & set(r["mma"].split("+"))
    assert r["load"] == "128b"
    assert r["pipelined"] != "no" and r["stages"] >= 2  # K/V double-buffered


def test_oversized_gemm_configs_are_pruned_for_sm89():
    configs = fp8_matmul._BIG_CONFIGS
    kept = fp8_matmul.prune_configs(configs, SM89.smem_bytes, block_scaled=False)
    dropped = [c for c in configs if c not in kept]
    assert dropped and kept
    assert all(fp8_matmul.config_smem_bytes(c) > SM89.smem_bytes for c in dropped)
    assert fp8_matmul.prune_configs(configs, SM90.smem_bytes, block_scaled=False) == configs
    # The compile check applies the same rule, and the biggest config kept really fits.
    big = [c for c in all_cases() if c.family == "fp8_gemm" and c.tier == "big"]
    assert all((prune_reason(c, SM89) is None) == (c.smem_estimate <= SM89.smem_bytes)
               for c in big)



def test_every_kept_config_fits_sm89(rows):
    """The CI cases the launchers keep for sm_89 compile within its 99 KB."""
    sm89 = [r for r in rows if r["target"] == "sm_89"]
    assert any(r["note"].startswith("pruned") for r in sm89)  # the 147 KB big-tier config
    for r in sm89:
        if not r["note"]:
            assert r["smem"] <= SM89.smem_bytes


def test_block_scaled_weights_prune_wide_k_tiles():
    kept = fp8_matmul.prune_configs(fp8_matmul._SKINNY_CONFIGS, SM90.smem_bytes, True)
    assert kept and all(c.kwargs["BLOCK_K"] <= 128 for c in kept)
    assert len(kept) < len(fp8_matmul._SKINNY_CONFIGS)


def test_fp8_refuses_sm80_with_a_clear_error(monkeypatch):
    assert target_for_capability(8, 0) is SM80 and not fp8_matmul.supports_fp8((8, 0))
    assert fp8_matmul.supports_fp8((8, 9)) and fp8_matmul.supports_fp8((9, 0))
    assert prune_reason(next(c for c in REPRESENTATIVE if c.tier == "big"), SM80) == "no fp8 MMA on sm_80"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(RuntimeError, match=r"compute capability 8\.9.*A100 is sm_80"):
        fp8_matmul.require_fp8_device(torch.device("cuda", 0))


def test_specialization_matches_what_a_launch_builds():
    """Our signature/constexprs/divisibility hints equal the JIT's own for the same args
    (compiled kernels only: run in a subprocess without the interpreter)."""
    done = subprocess.run([sys.executable, "-c", _CROSS_CHECK], cwd=ROOT, env=_compiled_env(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("same")


# Builds the launch's specialization with Triton's own binder (private API, 3.6 to 3.9).
_CROSS_CHECK = """
import torch
from triton.backends.compiler import GPUTarget
from triton.compiler import make_backend
from triton.runtime.jit import create_function_from_signature
from kernels.aot.cases import all_cases
from kernels.aot.specialize import Ptr, specialize

dtypes = {"fp8e4nv": torch.float8_e4m3fn, "bf16": torch.bfloat16, "fp32": torch.float32,
          "i32": torch.int32, "i64": torch.int64}
backend = make_backend(GPUTarget("cuda", 90, 32))
for case in [c for c in all_cases() if c.representative]:
    fn = case.kernel
    args = {k: torch.empty(16, dtype=dtypes[v.dtype]) if isinstance(v, Ptr) else v
            for k, v in case.args.items()}
    consts = {p.name for p in fn.params if p.is_constexpr}
    runtime = [args[n] for n in fn.arg_names if n not in consts]
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, options = binder(*runtime, **{n: args[n] for n in consts})
    _, signature, constexprs, attrs = fn._pack_args(backend, {n: args[n] for n in consts},
                                                    bound, spec, options)
    ours = specialize(fn, case.args)
    assert ours[0] == signature, (case.label, ours[0], signature)
    assert ours[1] == constexprs, (case.label, ours[1], constexprs)
    theirs = {k: v for k, v in attrs.items() if v}
    assert {k: v for k, v in ours[2].items() if v} == theirs, case.label
print("same")
"""
