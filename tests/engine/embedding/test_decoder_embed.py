"""Pooled Llama embeddings (LLM.embed) vs transformers' LlamaModel final hidden states."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine import LLM

PROMPTS = ["The capital of France is Paris.", "def f(x):\n    return x * 2",
           "café", "The quick brown fox jumps over the lazy dog. " * 3]


@pytest.fixture(scope="module")
def llm(tiny_llama: Path) -> LLM:
    # A small token budget so the inputs are spread over several scratch-cache batches.
    return LLM(str(tiny_llama), max_model_len=160, max_num_batched_tokens=60, block_size=16)


def _reference(path: Path, ids: list[int]) -> torch.Tensor:
    from transformers import LlamaModel

    model = LlamaModel.from_pretrained(path, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).last_hidden_state[0]


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pooled_states_match_transformers(llm: LLM, tiny_llama: Path, pooling: str) -> None:
    outs = llm.embed(PROMPTS, pooling=pooling)
    for prompt, out in zip(PROMPTS, outs, strict=True):
        assert out.prompt_token_ids == llm.tokenizer.encode(prompt)
        states = _reference(tiny_llama, out.prompt_token_ids)
        pooled = states.mean(dim=0) if pooling == "mean" else states[-1]
        torch.testing.assert_close(torch.tensor(out.embedding), F.normalize(pooled, dim=-1),
                                   atol=1e-4, rtol=1e-4)


def test_batch_and_raw_vectors(llm: LLM) -> None:
    together = llm.embed(PROMPTS, normalize=False)
    alone = [llm.embed(p, normalize=False)[0] for p in PROMPTS]
    for a, b in zip(together, alone, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-4)
    norms = [float(torch.tensor(o.embedding).norm()) for o in together]
    assert any(abs(n - 1.0) > 1e-3 for n in norms)  # normalize=False really is raw


def test_generation_still_works_after_embedding(llm: LLM) -> None:
    from engine import SamplingParams

    before = llm.generate("The capital", SamplingParams(temperature=0, max_tokens=5))
    llm.embed(PROMPTS)
    after = llm.generate("The capital", SamplingParams(temperature=0, max_tokens=5))
    assert after[0].outputs[0].token_ids == before[0].outputs[0].token_ids


def test_bad_inputs(llm: LLM) -> None:
    long_ids = [5] * 200
    with pytest.raises(ValueError, match=r"200 tokens.*160"):
        llm.embed(long_ids)
    assert len(llm.embed(long_ids, truncate=True)[0].prompt_token_ids) == 160
    with pytest.raises(ValueError, match="pooling"):
        llm.embed("x", pooling="cls")
    with pytest.raises(ValueError, match="empty"):
        llm.embed("")
    with pytest.raises(ValueError, match="token ids"):
        llm.embed([[1, -3]])
