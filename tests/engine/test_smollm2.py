"""The real default model (SmolLM2-135M-Instruct, GGUF Q4_1), greedy, as loaded by default
(int8 weights on the CPU for this Q4_1 file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import LLM, SamplingParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llm(smollm2_gguf: Path) -> LLM:
    return LLM(str(smollm2_gguf), max_model_len=2048)


def test_chat_answers_paris(llm: LLM) -> None:
    params = SamplingParams(temperature=0, max_tokens=24)
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}], params)
    completion = out[0].outputs[0]
    assert "Paris" in completion.text
    assert completion.finish_reason in ("stop", "length")


def test_completion_answers_paris(llm: LLM) -> None:
    out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=8))
    assert "Paris" in out[0].outputs[0].text


def test_chat_stops_at_end_of_turn(llm: LLM) -> None:
    """<|im_end|> ends the answer: finish_reason stop and no marker in the text."""
    params = SamplingParams(temperature=0, max_tokens=64)
    out = llm.chat([{"role": "user", "content": "Say hello."}], params)[0].outputs[0]
    assert out.finish_reason == "stop"
    assert out.token_ids[-1] in llm.eos_token_ids
    assert "<|im_end|>" not in out.text


def test_registered_name_resolves(smollm2_gguf: Path) -> None:
    from engine.model.checkpoint import resolve_model_path
    from weights import model_path

    if model_path("smollm2-135m-instruct") != smollm2_gguf:
        pytest.skip("the model was given through ENGINE_SMOLLM2_GGUF, not fetched")
    assert resolve_model_path("smollm2-135m-instruct") == smollm2_gguf


COPY_PROMPT = [{"role": "user", "content": (
    "Repeat the following text exactly, word for word:\n\nThe old railway library of "
    "Westbrook, a red-brick hall from 1902, will reopen next autumn with a reading room for "
    "children and an archive of maps.")}]


def test_speculation_keeps_the_greedy_answer(smollm2_gguf: Path) -> None:
    """Float weights: n-gram speculation gives token for token the plain greedy answer,
    taking several tokens per step while the answer copies the prompt. (int8 rounds
    activations per GEMM call, so there a near-tie may fall the other way.)"""
    params = SamplingParams(temperature=0, max_tokens=32)
    plain = LLM(str(smollm2_gguf), quantization="none", max_model_len=512)
    want = plain.chat(COPY_PROMPT, params)[0].outputs[0].token_ids
    del plain
    spec = LLM(str(smollm2_gguf), quantization="none", max_model_len=512, speculative_ngram=6)
    got = spec.chat(COPY_PROMPT, params)[0].outputs[0].token_ids
    assert got == want
    stats = spec.llm_engine.core.stats
    assert stats.spec_accepted_tokens >= len(want) // 2
    assert stats.steps < len(want) // 2
