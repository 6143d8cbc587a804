"""The real SmolLM2 loaded once per session in the ways several quality tests read it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.model.checkpoint import LoadedModel
from engine.model.loader import load_model

CPU = torch.device("cpu")


@pytest.fixture(scope="session")
def smollm2_float32(smollm2_gguf: Path) -> LoadedModel:
    """Its Q4_1 weights dequantized to float32 (quantization="none")."""
    return load_model(smollm2_gguf, torch.float32, CPU, quantization="none")


@pytest.fixture(scope="session")
def smollm2_default(smollm2_gguf: Path) -> LoadedModel:
    """As the engine loads it on the CPU by default (int8 weights, for a Q4_1 file)."""
    return load_model(smollm2_gguf, torch.float32, CPU)
