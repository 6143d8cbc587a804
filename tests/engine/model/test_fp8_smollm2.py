"""FP8 on the real model: perplexity of a fixed text within 2% of the unquantized model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine.model.checkpoint import LoadedModel
from engine.model.loader import load_model
from engine.worker.model_runner import ModelRunner, SequenceChunk
from tests.engine.model.conftest import CPU

TEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the "
    "tower from 1887 to 1889. Locally nicknamed the Iron Lady, it was constructed as the "
    "centrepiece of the 1889 World's Fair, and to crown the centennial anniversary of the "
    "French Revolution. Although initially criticised by some of France's leading artists "
    "and intellectuals for its design, it has since become a global cultural icon of France "
    "and one of the most recognisable structures in the world. The tower received 5,889,000 "
    "visitors in 2022. It is the most visited monument with an entrance fee in the world."
)


def perplexity(loaded: LoadedModel, device: torch.device = CPU) -> float:
    """Of TEXT, in one prefill."""
    ids = loaded.tokenizer.encode(TEXT)
    blocks = -(-len(ids) // 16)
    runner = ModelRunner(loaded.model, num_blocks=blocks, block_size=16, device=device)
    input_ids, positions, meta = runner.prepare([SequenceChunk(ids, 0, list(range(blocks)))])
    with torch.inference_mode():
        logits = runner.model.compute_logits(runner.model(input_ids, positions, runner.kv_caches, meta))
    nll = torch.nn.functional.cross_entropy(logits[:-1].float(), torch.tensor(ids[1:], device=device))
    return math.exp(nll.item())


@pytest.mark.slow
def test_fp8_perplexity_on_cpu(smollm2_gguf: Path, smollm2_float32: LoadedModel) -> None:
    base = perplexity(smollm2_float32)
    fp8 = perplexity(load_model(smollm2_gguf, torch.float32, CPU, quantization="fp8"))
    assert base < 20  # the text is ordinary English: the model must find it likely
    assert fp8 <= base * 1.02, (fp8, base)


@pytest.mark.gpu
@pytest.mark.slow
def test_fp8_perplexity_on_gpu(smollm2_gguf: Path) -> None:
    """Through the Triton kernels: FP8 GEMMs against the bf16 model."""
    import kernels

    cuda = torch.device("cuda")
    base = perplexity(load_model(smollm2_gguf, torch.bfloat16, cuda, kernels.triton_ops), cuda)
    fp8 = perplexity(load_model(smollm2_gguf, torch.bfloat16, cuda, kernels.triton_ops,
                                quantization="fp8"), cuda)
    assert fp8 <= base * 1.02, (fp8, base)
