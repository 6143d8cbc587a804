"""Turns scheduled sequences into tensors, owns the paged KV cache, runs the model."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from engine.model.attention import AttentionMetadata
from engine.model.llama import LlamaForCausalLM

logger = logging.getLogger(__name__)


@dataclass
class ScheduledSequence:
    """The slice of one sequence that this step computes."""

    token_ids: list[int]  # the new tokens whose K/V this step writes
    start_pos: int  # their first position (= tokens already in the cache)
    block_table: list[int]  # the KV blocks this sequence owns, in order


def kv_bytes_per_token(model: LlamaForCausalLM, dtype: torch.dtype) -> int:
    c = model.config
    return 2 * c.num_layers * c.num_kv_heads * c.head_dim * torch.empty((), dtype=dtype).element_size()


class ModelRunner:
    def __init__(
        self, model: LlamaForCausalLM, num_blocks: int, block_size: int, device: torch.device
    ) -> None:
        self.model = model
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.device = device
        c = model.config
        dtype = model.embed_tokens.weight.dtype
        shape = (num_blocks, block_size, c.num_kv_heads, c.head_dim)
        self.kv_caches = [
            (torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(c.num_layers)
        ]
        logger.info(
            "KV cache: %d blocks x %d tokens = %d tokens, %.1f MiB",
            num_blocks, block_size, num_blocks * block_size,
            num_blocks * block_size * kv_bytes_per_token(model, dtype) / 2**20,
        )

    def prepare(self, seqs: list[ScheduledSequence]) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """Flat input ids and positions for all sequences, plus where their K/V live."""
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        context_lens: list[int] = []
        query_start_loc = [0]
        for seq in seqs:
            pos = range(seq.start_pos, seq.start_pos + len(seq.token_ids))
            input_ids.extend(seq.token_ids)
            positions.extend(pos)
            slots.extend(seq.block_table[p // bs] * bs + p % bs for p in pos)
            context_lens.append(pos.stop)
            query_start_loc.append(query_start_loc[-1] + len(seq.token_ids))
        width = max(len(s.block_table) for s in seqs)
        tables = [s.block_table + [0] * (width - len(s.block_table)) for s in seqs]

        def as_tensor(values: list) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long, device=self.device)

        meta = AttentionMetadata(
            slot_mapping=as_tensor(slots),
            block_tables=as_tensor(tables),
            context_lens=context_lens,
            query_start_loc=query_start_loc,
        )
        return as_tensor(input_ids), as_tensor(positions), meta

    @torch.inference_mode()
    def execute(self, seqs: list[ScheduledSequence]) -> torch.Tensor:
        """One forward over every scheduled token; float32 logits of each sequence's last token."""
        input_ids, positions, meta = self.prepare(seqs)
        hidden = self.model(input_ids, positions, self.kv_caches, meta)
        last = torch.tensor(meta.query_start_loc[1:], device=self.device) - 1
        return self.model.compute_logits(hidden[last])
