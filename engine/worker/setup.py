"""What every rank builds before its first step: the model (its share under tensor
parallelism), the KV cache size, and the ModelRunner. Rank 0 and the workers run the same
code, so their caches agree block for block."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch

from engine.config import EngineConfig, parse_dtype
from engine.model.checkpoint import LoadedModel
from engine.model.loader import load_model
from engine.worker.kernel_backend import select_ops, uses_cuda_graphs
from engine.worker.kv_budget import num_kv_blocks
from engine.worker.model_runner import ModelRunner

if TYPE_CHECKING:
    from engine.parallel.comm import TPComm

logger = logging.getLogger(__name__)


def parse_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a valid torch device") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return dev


def fit_to_cache(max_model_len: int, num_blocks: int, config: EngineConfig) -> int:
    """The context length the KV cache can hold for one sequence: a sequence longer than the
    whole cache could never run, so it would end early. An explicit max_model_len that does
    not fit is an error; the model's own length is capped (and the cap logged)."""
    capacity = num_blocks * config.block_size
    if max_model_len <= capacity:
        return max_model_len
    if config.max_model_len is not None:
        raise ValueError(
            f"max_model_len {max_model_len} does not fit the KV cache, which holds {capacity} "
            f"tokens ({num_blocks} blocks of {config.block_size}): give the cache more memory "
            "(kv_cache_bytes / gpu_memory_utilization) or lower max_model_len")
    logger.warning("the KV cache holds %d tokens: max_model_len capped from %d to %d",
                   capacity, max_model_len, capacity)
    return capacity


@dataclass
class RankSetup:
    loaded: LoadedModel
    runner: ModelRunner
    ops: SimpleNamespace
    num_blocks: int
    max_model_len: int


def setup_rank(config: EngineConfig, device: torch.device, comm: TPComm | None = None
               ) -> RankSetup:
    """Load the model (the rank's share with `comm`) and size its paged KV cache: each
    rank's cache holds its own KV heads; every rank takes the smallest block count any
    rank can afford."""
    dtype = parse_dtype(config.dtype)
    ops = select_ops(config.kernel_backend, device)
    loaded = load_model(config.model, dtype, device, ops, quantization=config.quantization,
                        load_format=config.load_format, comm=comm)
    limit = loaded.config.max_position_embeddings
    if config.max_model_len is not None and config.max_model_len > limit:
        raise ValueError(f"max_model_len {config.max_model_len} exceeds the model's context {limit}")
    max_model_len = config.max_model_len or limit
    # The rank's KV heads and MLP width (the whole model's without tensor parallelism); the
    # whole vocabulary, since every rank holds the gathered logits.
    shape = replace(loaded.model.config, vocab_size=loaded.config.vocab_size)
    num_blocks = num_kv_blocks(shape, config, max_model_len, device, dtype)
    if comm is not None:
        num_blocks = comm.min_int(num_blocks)
    max_model_len = fit_to_cache(max_model_len, num_blocks, config)
    runner = ModelRunner(
        loaded.model, num_blocks, config.block_size, device,
        cuda_graphs=uses_cuda_graphs(ops, device, config.enforce_eager),
        graph_batch=config.max_num_seqs, max_model_len=max_model_len,
    )
    return RankSetup(loaded, runner, ops, num_blocks, max_model_len)
