"""The whole model through the Triton kernels (interpreted on the CPU) equals the torch path.

Both runners hold the same checkpoint; they are driven through the same steps: a prefill of
two sequences, a mixed step (one decodes while the other prefills its next chunk over the
cached context) and a pure decode step, with non-contiguous block tables.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import kernels
from engine import EngineConfig
from engine.model.loader import load_model
from engine.worker.cpu_ops import cpu_ops
from engine.worker.kernel_backend import select_ops
from engine.worker.model_runner import ModelRunner, SequenceChunk
from tests.conftest import make_tiny_llama

BLOCK = 4
TABLE_A = [6, 1, 9, 3]  # out of order on purpose
TABLE_B = [2, 8, 0]
STEPS = [
    [SequenceChunk(list(range(20, 33)), 0, TABLE_A), SequenceChunk([5, 6, 7, 8, 9], 0, TABLE_B)],
    [SequenceChunk([40], 13, TABLE_A), SequenceChunk([11, 12, 13, 14, 15, 16], 5, TABLE_B)],
    [SequenceChunk([41], 14, TABLE_A), SequenceChunk([17], 11, TABLE_B)],
]


def run_steps(folder: Path, ops: object, quantization: str | None = None) -> list[torch.Tensor]:
    loaded = load_model(folder, torch.float32, torch.device("cpu"), ops, quantization=quantization)
    runner = ModelRunner(loaded.model, num_blocks=10, block_size=BLOCK, device=torch.device("cpu"))
    return [runner.execute(step) for step in STEPS]


def assert_same_steps(expected: list[torch.Tensor], got: list[torch.Tensor]) -> None:
    for step, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert not torch.isnan(g).any(), f"step {step}"
        scale = e.abs().max().item()
        assert (g - e).abs().max().item() <= 1e-4 * scale, f"step {step}"
        assert torch.equal(g.argmax(-1), e.argmax(-1)), f"step {step}"


def test_triton_path_matches_reference(tiny_llama: Path) -> None:
    """Both shapes: attention differs between them (MHA vs GQA, rope scaling)."""
    assert_same_steps(run_steps(tiny_llama, kernels.reference_ops),
                      run_steps(tiny_llama, kernels.triton_ops))


def test_cpu_ops_with_step_plans_match_reference(tiny_llama: Path) -> None:
    """CpuOps (per-step plans: rotary matrices, decode grouping, unfiltered KV write) gives
    the references' logits step after step; each step's plan is its own (two decode steps
    in a row, at new positions, lengths and batch size)."""
    steps = STEPS + [[SequenceChunk([42], 15, TABLE_A)]]

    def run(ops: object) -> list[torch.Tensor]:
        loaded = load_model(tiny_llama, torch.float32, torch.device("cpu"), ops)
        runner = ModelRunner(loaded.model, num_blocks=10, block_size=BLOCK,
                             device=torch.device("cpu"))
        return [runner.execute(step) for step in steps]

    assert_same_steps(run(kernels.reference_ops), run(cpu_ops))


def test_triton_fp8_path_matches_reference(tmp_path: Path) -> None:
    """FP8 linear layers (whose shapes do not depend on the attention layout): one shape,
    since the interpreted FP8 GEMM costs seconds per model."""
    folder = make_tiny_llama(tmp_path / "tiny", "llama31")
    assert_same_steps(run_steps(folder, kernels.reference_ops, "fp8"),
                      run_steps(folder, kernels.triton_ops, "fp8"))


def test_backend_choice() -> None:
    cpu = torch.device("cpu")
    assert select_ops("auto", cpu) is cpu_ops
    assert select_ops("torch", cpu) is cpu_ops
    assert select_ops("triton", cpu) is kernels.triton_ops  # interpreted in the test session


def test_triton_on_cpu_needs_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        select_ops("triton", torch.device("cpu"))


@pytest.mark.parametrize(("field", "value"), [
    ("quantization", "int4"), ("load_format", "pt"), ("kernel_backend", "cuda"),
])
def test_engine_config_rejects_unknown_choices(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        EngineConfig("m", **{field: value})
