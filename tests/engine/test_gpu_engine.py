"""The engine on a GPU: the Triton path and CUDA graphs change no greedy answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import LLM, SamplingParams

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

PROMPTS = [
    "The capital of France is",
    "List three colours of the rainbow:",
    "def fibonacci(n):",
    "Water boils at",
]
GREEDY = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)


def greedy(model: Path, **engine_args: object) -> list[list[int]]:
    llm = LLM(str(model), device="cuda", **engine_args)
    return [o.outputs[0].token_ids for o in llm.generate(PROMPTS, GREEDY)]


def test_triton_path_matches_reference_path(smollm2_gguf: Path) -> None:
    reference = greedy(smollm2_gguf, kernel_backend="torch")
    assert greedy(smollm2_gguf, kernel_backend="triton", enforce_eager=True) == reference


def test_cuda_graphs_match_eager(smollm2_gguf: Path) -> None:
    eager = greedy(smollm2_gguf, kernel_backend="triton", enforce_eager=True)
    graphs = greedy(smollm2_gguf, kernel_backend="triton", enforce_eager=False)
    assert graphs == eager


def test_chat_answer_through_triton_and_graphs(smollm2_gguf: Path) -> None:
    llm = LLM(str(smollm2_gguf), device="cuda", kernel_backend="triton")
    assert llm.llm_engine.core.runner.graphs is not None
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(temperature=0, max_tokens=16))
    assert "Paris" in out[0].outputs[0].text


def test_fp8_serves_the_same_question(smollm2_gguf: Path) -> None:
    llm = LLM(str(smollm2_gguf), device="cuda", dtype="bfloat16", quantization="fp8")
    out = llm.generate(["The capital of France is"],
                       SamplingParams(temperature=0, max_tokens=8))
    assert "Paris" in out[0].outputs[0].text
