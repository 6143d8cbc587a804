"""CUDA graphs for decode steps: one captured forward per batch size of a ladder.

A decode step launches hundreds of small kernels; at small batch the launch overhead
rivals the work. Each graph is captured once over static input buffers; a step of n
sequences copies its inputs into the first n rows, pads up to the next captured size
(padding rows write nowhere: slot -1, and attend to nothing: context length 0) and replays.
"""

from __future__ import annotations

import logging

import torch

from engine.model.attention import AttentionMetadata
from engine.model.llama import KVCache, LlamaForCausalLM

logger = logging.getLogger(__name__)


def batch_ladder(max_batch: int) -> list[int]:
    """1, 2, 4, 8, then every 16 up to max_batch (which is always included)."""
    sizes = [b for b in (1, 2, 4, 8) if b < max_batch]
    sizes += list(range(16, max_batch, 16))
    return sorted(set(sizes + [max_batch]))


def decode_splits(max_blocks: int) -> int:
    """KV splits of the captured decode kernel: enough programs for a long context at
    batch 1, fixed at capture time; short contexts leave the extra splits empty."""
    return max(1, min(16, max_blocks // 16))


class DecodeGraphs:
    def __init__(
        self, model: LlamaForCausalLM, kv_caches: list[KVCache], max_batch: int,
        max_blocks: int, device: torch.device,
    ) -> None:
        if device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.model = model
        self.kv_caches = kv_caches
        self.sizes = batch_ladder(max_batch)
        self.max_blocks = max_blocks
        self.splits = decode_splits(max_blocks)
        n = self.sizes[-1]

        def zeros(*shape: int, dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        self.input_ids = zeros(n, dtype=torch.long)
        self.positions = zeros(n, dtype=torch.long)
        self.slots = torch.full((n,), -1, dtype=torch.long, device=device)
        self.block_tables = zeros(n, max_blocks, dtype=torch.int32)
        self.context_lens = zeros(n, dtype=torch.int32)
        self.query_start_loc = torch.arange(n + 1, dtype=torch.int32, device=device)
        self.outputs: dict[int, torch.Tensor] = {}
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._capture()

    def _meta(self, b: int) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=self.slots[:b], block_tables=self.block_tables[:b],
            context_lens=self.context_lens[:b], query_start_loc=self.query_start_loc[: b + 1],
            max_query_len=1, decode_splits=self.splits,
        )

    def _forward(self, b: int) -> torch.Tensor:
        return self.model(self.input_ids[:b], self.positions[:b], self.kv_caches, self._meta(b))

    @torch.inference_mode()
    def _capture(self) -> None:
        pool = None
        for b in reversed(self.sizes):  # largest first, so smaller graphs reuse its memory
            self._forward(b)  # compile / autotune the kernels outside the capture
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[b] = self._forward(b)
            pool = graph.pool()
            self.graphs[b] = graph
        torch.cuda.synchronize()
        logger.info("captured CUDA graphs for decode batches %s (%d KV splits)",
                    self.sizes, self.splits)

    def fits(self, meta: AttentionMetadata) -> bool:
        return (meta.max_query_len == 1 and meta.context_lens.shape[0] <= self.sizes[-1]
                and meta.block_tables.shape[1] <= self.max_blocks)

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor,
            meta: AttentionMetadata) -> torch.Tensor:
        n = input_ids.shape[0]
        b = next(size for size in self.sizes if size >= n)
        width = meta.block_tables.shape[1]
        self.input_ids[:n].copy_(input_ids)
        self.positions[:n].copy_(positions)
        self.slots[:n].copy_(meta.slot_mapping)
        self.slots[n:b].fill_(-1)
        self.block_tables[:n, :width].copy_(meta.block_tables)
        self.context_lens[:n].copy_(meta.context_lens)
        self.context_lens[n:b].zero_()
        self.graphs[b].replay()
        return self.outputs[b][:n]
