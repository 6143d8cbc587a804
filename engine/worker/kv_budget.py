"""How many KV blocks fit in the memory budget (reported at start-up)."""

from __future__ import annotations

import logging

import torch

from engine.config import EngineConfig, ModelConfig

logger = logging.getLogger(__name__)

DEFAULT_CPU_KV_BYTES = 1 << 30


def kv_bytes_per_token(model: ModelConfig, dtype: torch.dtype) -> int:
    """K and V, every layer, one token."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * model.num_layers * model.num_kv_heads * model.head_dim * itemsize


def activation_reserve(model: ModelConfig, config: EngineConfig, dtype: torch.dtype) -> int:
    """A generous bound on a step's transient tensors: a few hidden-size and MLP-size
    activations per batched token, plus float32 logits for every sequence."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    per_token = (6 * model.hidden_size + 3 * model.intermediate_size) * itemsize
    logits = config.max_num_seqs * model.vocab_size * 4 * 3
    return config.max_num_batched_tokens * per_token + logits


def kv_budget_bytes(model: ModelConfig, config: EngineConfig, device: torch.device, dtype: torch.dtype) -> int:
    if config.kv_cache_bytes is not None:
        return config.kv_cache_bytes
    if device.type != "cuda":
        return DEFAULT_CPU_KV_BYTES
    free, total = torch.cuda.mem_get_info(device)
    used = total - free  # the weights, loaded already, and anything else on the GPU
    budget = int(total * config.gpu_memory_utilization) - used - activation_reserve(model, config, dtype)
    if budget <= 0:
        raise ValueError(
            f"no GPU memory left for the KV cache: {used / 2**30:.1f} GiB in use of "
            f"{total / 2**30:.1f} GiB at gpu_memory_utilization={config.gpu_memory_utilization}"
        )
    return budget


def num_kv_blocks(
    model: ModelConfig, config: EngineConfig, max_model_len: int, device: torch.device,
    dtype: torch.dtype,
) -> int:
    """Blocks the budget pays for, capped at what max_num_seqs full-length sequences use."""
    block_bytes = config.block_size * kv_bytes_per_token(model, dtype)
    affordable = kv_budget_bytes(model, config, device, dtype) // block_bytes
    useful = -(-max_model_len // config.block_size) * config.max_num_seqs
    num_blocks = min(affordable, useful)
    if num_blocks < 1:
        raise ValueError(f"the KV cache budget does not fit one block of {block_bytes} bytes")
    logger.info(
        "KV cache: %d blocks x %d tokens = %d tokens, %.1f MiB",
        num_blocks, config.block_size, num_blocks * config.block_size,
        num_blocks * block_bytes / 2**20,
    )
    return int(num_blocks)
