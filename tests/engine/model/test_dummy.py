"""load_format="dummy": random weights for a shape, no weight file needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine import LLM, SamplingParams
from engine.model.dummy import DUMMY_EOS_ID, byte_tokenizer, dummy_source

SHAPE = {
    "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 400,
    "max_position_embeddings": 128,
}


@pytest.fixture
def config_only(tmp_path: Path) -> Path:
    """A folder with a config.json and nothing else: no weights, no tokenizer."""
    (tmp_path / "config.json").write_text(json.dumps(SHAPE))
    return tmp_path


def test_dummy_model_generates_without_weights(config_only: Path) -> None:
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    first = LLM(str(config_only), load_format="dummy").generate(["hello"], params)[0]
    again = LLM(str(config_only), load_format="dummy").generate(["hello"], params)[0]
    tokens = first.outputs[0].token_ids
    assert len(tokens) == 6 and all(0 <= t < SHAPE["vocab_size"] for t in tokens)
    assert tokens == again.outputs[0].token_ids  # the random init is seeded


def test_a_folder_without_weights_still_needs_dummy(config_only: Path) -> None:
    with pytest.raises(FileNotFoundError, match="safetensors"):
        LLM(str(config_only))


def test_byte_tokenizer_round_trips_any_text() -> None:
    tok = byte_tokenizer(SHAPE["vocab_size"])
    text = "héllo wörld 🙂"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.eos_token_id == DUMMY_EOS_ID
    assert tok.token_bytes(ord("a")) == b"a"


def test_builtin_shape_needs_no_file() -> None:
    config, tokenizer = dummy_source("llama-3.1-8b")
    assert tokenizer is None
    assert (config.num_layers, config.num_heads, config.num_kv_heads) == (32, 32, 8)
    assert config.rope_scaling is not None and config.rope_scaling.rope_type == "llama3"


def test_unknown_dummy_source_lists_the_shapes() -> None:
    with pytest.raises(FileNotFoundError, match="llama-3.1-8b"):
        dummy_source("no-such-model")


def test_dummy_weights_are_finite_in_bfloat16(config_only: Path) -> None:
    llm = LLM(str(config_only), load_format="dummy", dtype="bfloat16")
    for name, p in llm.llm_engine.core.runner.model.named_parameters():
        assert torch.isfinite(p.float()).all(), name
    out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 3


def test_byte_tokenizer_needs_room_for_the_bytes() -> None:
    with pytest.raises(ValueError, match="256"):
        byte_tokenizer(200)
