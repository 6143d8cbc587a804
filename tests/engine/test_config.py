"""ModelConfig from both config.json conventions and from GGUF metadata; EngineConfig checks."""

from __future__ import annotations

import math

import pytest

from engine.config import EngineConfig, ModelConfig, RopeScaling, parse_dtype
from engine.model.layers import rope_inv_freq

BASE = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "eos_token_id": [128001, 128008, 128009],
}
LLAMA31_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def test_transformers4_layout() -> None:
    """Llama 3.1's published config.json: rope_theta and rope_scaling at the top level."""
    cfg = ModelConfig.from_hf_config({**BASE, "rope_theta": 500000.0, "rope_scaling": LLAMA31_SCALING})
    assert cfg.rope_theta == 500000.0
    assert cfg.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)
    assert cfg.head_dim == 128 and cfg.num_kv_heads == 8
    assert cfg.eos_token_ids == (128001, 128008, 128009)


def test_transformers5_layout() -> None:
    """transformers >= 5 folds both into `rope_parameters`."""
    cfg = ModelConfig.from_hf_config(
        {**BASE, "rope_parameters": {"rope_theta": 500000.0, **LLAMA31_SCALING}}
    )
    assert cfg.rope_theta == 500000.0
    assert cfg.rope_scaling is not None and cfg.rope_scaling.factor == 8.0


def test_llama3_scaling_bands() -> None:
    """High frequencies are kept, low ones divided by `factor` (the published formula)."""
    scaling = RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)
    plain = rope_inv_freq(128, 500000.0, None)
    scaled = rope_inv_freq(128, 500000.0, scaling)
    wavelen = 2 * math.pi / plain
    high = wavelen < 8192 / 4.0
    low = wavelen > 8192 / 1.0
    assert high.any() and low.any()
    assert scaled[high].equal(plain[high])
    assert scaled[low].allclose(plain[low] / 8.0)
    middle = ~high & ~low
    assert ((scaled[middle] < plain[middle]) & (scaled[middle] > plain[middle] / 8.0)).all()


def test_unsupported_configs_raise() -> None:
    with pytest.raises(ValueError, match="rope_scaling type 'yarn'"):
        ModelConfig.from_hf_config({**BASE, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match="model_type 'mistral'"):
        ModelConfig.from_hf_config({**BASE, "model_type": "mistral", "architectures": ["X"]})
    with pytest.raises(ValueError, match="multiple"):
        ModelConfig.from_hf_config({**BASE, "num_key_value_heads": 5})
    with pytest.raises(ValueError, match="architecture 'gemma'"):
        ModelConfig.from_gguf_metadata({"general.architecture": "gemma"}, has_output=True)


def test_engine_config_validation() -> None:
    with pytest.raises(ValueError, match="block_size"):
        EngineConfig("m", block_size=12)
    with pytest.raises(ValueError, match="max_num_seqs"):
        EngineConfig("m", max_num_seqs=0)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        EngineConfig("m", gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="dtype"):
        parse_dtype("int4")
