"""int8 on the real model: perplexity within 2% of float32, the default for its Q4_1 file,
and the chat answer still "Paris"."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import LLM, SamplingParams
from engine.model.int8 import Int8Linear
from engine.model.loader import load_model
from tests.engine.model.test_fp8_smollm2 import perplexity

pytestmark = pytest.mark.slow
CPU = torch.device("cpu")


def test_int8_perplexity_within_two_percent_of_float32(smollm2_gguf: Path) -> None:
    base = perplexity(smollm2_gguf, torch.float32, CPU, quantization="none")
    int8 = perplexity(smollm2_gguf, torch.float32, CPU, quantization="int8")
    assert base < 20
    assert abs(int8 - base) <= 0.02 * base, (int8, base)


def test_low_bit_gguf_loads_as_int8_by_default(smollm2_gguf: Path) -> None:
    default = load_model(smollm2_gguf, torch.float32, CPU).model
    assert isinstance(default.lm_head, Int8Linear)
    plain = load_model(smollm2_gguf, torch.float32, CPU, quantization="none").model
    assert not any(isinstance(m, Int8Linear) for m in plain.modules())


def test_int8_chat_answers_paris(smollm2_gguf: Path) -> None:
    llm = LLM(str(smollm2_gguf), max_model_len=512, quantization="int8")
    params = SamplingParams(temperature=0, max_tokens=24)
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}], params)
    assert "Paris" in out[0].outputs[0].text
