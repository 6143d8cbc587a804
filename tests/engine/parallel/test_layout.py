"""Which part of each weight a tensor-parallel rank holds, and the shapes it refuses."""

from __future__ import annotations

import pytest

from engine.config import ModelConfig
from engine.parallel.layout import ZERO, Split, tp_layout


def shape(heads: int = 8, kv: int = 2, inter: int = 128, vocab: int = 321) -> ModelConfig:
    return ModelConfig(vocab_size=vocab, hidden_size=64, intermediate_size=inter, num_layers=1,
                       num_heads=heads, num_kv_heads=kv, head_dim=8, max_position_embeddings=64)


def test_heads_not_divisible_names_both_numbers() -> None:
    with pytest.raises(ValueError, match=r"6 attention heads .* tensor_parallel_size 4"):
        tp_layout(shape(heads=6, kv=6), 0, 4)


def test_kv_heads_neither_dividing_nor_divided_are_refused() -> None:
    with pytest.raises(ValueError, match=r"3 KV heads .* tensor_parallel_size 2"):
        tp_layout(shape(heads=6, kv=3), 0, 2)


def test_mlp_width_not_divisible_is_refused() -> None:
    with pytest.raises(ValueError, match=r"MLP width 130 .* tensor_parallel_size 4"):
        tp_layout(shape(inter=130), 0, 4)


def test_fewer_kv_heads_than_ranks_replicates_them() -> None:
    # 8 query heads, 2 KV heads, 4 ranks: ranks 0-1 share KV head 0, ranks 2-3 KV head 1,
    # and each rank's 2 query heads belong to that KV head (group of 4 query heads).
    layouts = [tp_layout(shape(), r, 4) for r in range(4)]
    assert [lay.kv_heads for lay in layouts] == [1, 1, 1, 1]
    assert [lay.kv_head_start for lay in layouts] == [0, 0, 1, 1]
    assert [lay.head_start // (8 // 2) for lay in layouts] == [0, 0, 1, 1]
    assert layouts[3].split("model.layers.0.self_attn.k_proj.weight", (16, 64)) == Split(0, 8, 16, 8)


def test_splits_are_megatron_style() -> None:
    lay = tp_layout(shape(), 1, 2)
    assert lay.split("model.layers.0.self_attn.q_proj.weight", (64, 64)) == Split(0, 32, 64, 32)
    assert lay.split("model.layers.0.self_attn.v_proj.weight", (16, 64)) == Split(0, 8, 16, 8)
    assert lay.split("model.layers.0.self_attn.o_proj.weight", (64, 64)) == Split(1, 32, 64, 32)
    assert lay.split("model.layers.0.mlp.up_proj.weight", (128, 64)) == Split(0, 64, 128, 64)
    assert lay.split("model.layers.0.mlp.down_proj.weight", (64, 128)) == Split(1, 64, 128, 64)
    assert lay.split("model.layers.0.input_layernorm.weight", (64,)) is None
    # Row-parallel biases are added once: by rank 0, after the all-reduce.
    assert lay.split("model.layers.0.mlp.down_proj.bias", (64,)) == ZERO
    assert tp_layout(shape(), 0, 2).split("model.layers.0.mlp.down_proj.bias", (64,)) is None


def test_vocabulary_is_padded_on_the_last_rank() -> None:
    # 321 rows over 2 ranks: 161 each, the last one's final row is padding.
    first, last = tp_layout(shape(), 0, 2), tp_layout(shape(), 1, 2)
    assert first.split("lm_head.weight", (321, 64)) == Split(0, 0, 161, 161)
    assert last.split("model.embed_tokens.weight", (321, 64)) == Split(0, 161, 321, 161)
    assert last.local_config().vocab_size == 161


def test_fp8_block_scales_split_on_block_boundaries() -> None:
    big = ModelConfig(vocab_size=512, hidden_size=512, intermediate_size=1024, num_layers=1,
                      num_heads=4, num_kv_heads=4, head_dim=128, max_position_embeddings=64)
    lay = tp_layout(big, 1, 2)
    # down_proj [512, 1024] in 128x128 blocks: scales [4, 8]; rank 1 holds scale columns 4-7.
    assert lay.split("model.layers.0.mlp.down_proj.weight_scale_inv", (4, 8), 128) == Split(1, 4, 8, 4)
    assert lay.split("model.layers.0.mlp.gate_proj.weight_scale_inv", (8, 4), 128) == Split(0, 4, 8, 4)
    # Per-channel scales follow a column-parallel weight's rows; per-tensor ones stay whole.
    assert lay.split("model.layers.0.mlp.gate_proj.weight_scale", (1024,)) == Split(0, 512, 1024, 512)
    assert lay.split("model.layers.0.mlp.down_proj.weight_scale", (512,)) is None
    assert lay.split("model.layers.0.mlp.down_proj.weight_scale", (1,)) is None
    with pytest.raises(ValueError, match=r"\[128, 256\) does not fall on 256-wide scale blocks"):
        tp_layout(big, 1, 4).split("model.layers.0.self_attn.k_proj.weight_scale_inv", (4, 4), 256)
