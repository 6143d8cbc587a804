"""load_format="dummy": random weights for a model's shape, with no weight file.

For benchmarking a shape whose checkpoint is not on the machine (Llama-3.1-8B on a GPU
box with no model hub). The shape comes from a built-in name below, an HF folder's
config.json (weights not needed), or a GGUF file's metadata. The tokenizer is the
folder's or file's own when it has one; otherwise a byte-level one of the model's
vocabulary size (every byte is a token; the other ids decode to "<dummy_N>").
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import tokenizers
import torch
from tokenizers import decoders, models, pre_tokenizers

from engine.config import ModelConfig
from engine.model.checkpoint import LoadedModel, empty_model, resolve_model_path, sharding
from engine.model.hf_loader import read_hf_config
from engine.tokenizer import Tokenizer
from engine.tokenizer.backends import TokenizersBackend, _gpt2_char_to_byte

if TYPE_CHECKING:
    from engine.parallel.comm import TPComm

# Published shapes (the config.json fields of the HF checkpoints) for runs without files.
_LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.1-8b": {
        "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": _LLAMA3_ROPE, "eos_token_id": [128001, 128008, 128009],
    },
    "llama-3.2-1b": {
        "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 64, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "tie_word_embeddings": True,
        "rope_scaling": {**_LLAMA3_ROPE, "factor": 32.0}, "eos_token_id": [128001, 128008, 128009],
    },
    "llama-2-7b": {
        "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "eos_token_id": 2,
    },
    "tinyllama-1.1b": {
        "vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632,
        "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "eos_token_id": 2,
    },
}
DUMMY_EOS_ID = 256  # the byte tokenizer's one special token, right after the 256 bytes


def dummy_source(model: str | Path) -> tuple[ModelConfig, Tokenizer | None]:
    """The shape (and tokenizer, when the source has one) of a dummy model."""
    name = str(model)
    if name in SHAPES:
        return ModelConfig.from_hf_config(SHAPES[name]), None
    try:
        path = resolve_model_path(model)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; load_format='dummy' also takes the built-in shapes "
                                f"{', '.join(sorted(SHAPES))}") from e
    if path.is_dir():
        config, _ = read_hf_config(path)
        has_tokenizer = (path / "tokenizer.json").exists() or (path / "tokenizer.model").exists()
        return config, Tokenizer.from_dir(path) if has_tokenizer else None
    from engine.model.gguf_file import GGUFFile  # `gguf` is needed by GGUF sources only

    gf = GGUFFile(path)
    try:
        names = {t.name for t in gf.tensors}
        config = ModelConfig.from_gguf_metadata(gf.metadata, has_output="output.weight" in names)
        return config, Tokenizer.from_gguf_metadata(gf.metadata)
    finally:
        gf.close()


def byte_tokenizer(vocab_size: int) -> Tokenizer:
    """Every byte one token (ids 0-255), id 256 the end-of-sequence token."""
    if vocab_size <= DUMMY_EOS_ID:
        raise ValueError(f"a dummy model needs a vocabulary above 256 tokens, got {vocab_size}")
    vocab = dict(_gpt2_char_to_byte())
    vocab.update({f"<dummy_{i}>": i for i in range(DUMMY_EOS_ID + 1, vocab_size)})
    vocab["<|eos|>"] = DUMMY_EOS_ID
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([tokenizers.AddedToken("<|eos|>", special=True, normalized=False)])
    return Tokenizer(TokenizersBackend(tok, "byte_level"), bos=None,
                     eos=("<|eos|>", DUMMY_EOS_ID), pad_token_id=None, chat_template=None)


@torch.no_grad()
def init_random(model: torch.nn.Module, seed: int = 0) -> None:
    """Small uniform weights (so activations stay finite in any dtype), norms at one."""
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        else:
            gen = torch.Generator(device=param.device).manual_seed(seed)
            param.uniform_(-0.02, 0.02, generator=gen)
            seed += 1


def load_dummy(
    model: str | Path, dtype: torch.dtype, device: torch.device, ops: SimpleNamespace,
    comm: TPComm | None = None,
) -> LoadedModel:
    """Random weights; under tensor parallelism each rank draws its own share (so the
    model differs from the TP=1 one: for benchmarks, not for comparing outputs)."""
    config, tokenizer = dummy_source(model)
    if tokenizer is None:
        tokenizer = byte_tokenizer(config.vocab_size)
        config = replace(config, eos_token_ids=(DUMMY_EOS_ID,))
    net = empty_model(config, dtype, device, ops, shard=sharding(comm, config))
    init_random(net)
    eos = set(config.eos_token_ids)
    if tokenizer.eos_token_id is not None:
        eos.add(tokenizer.eos_token_id)
    return LoadedModel(net, config, tokenizer, frozenset(eos), Path(str(model)))

