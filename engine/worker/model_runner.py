"""Turns scheduled sequences into tensors, owns the paged KV cache, runs the model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.model.attention import AttentionMetadata
from engine.model.llama import LlamaForCausalLM
from engine.worker.cuda_graphs import DecodeGraphs
from engine.worker.prompt_logprobs import prompt_logprobs
from engine.worker.sampler import TokenLogprobs


@dataclass
class SequenceChunk:
    """The slice of one sequence that this step computes."""

    token_ids: list[int]  # the new tokens whose K/V this step writes
    start_pos: int  # their first position (= tokens already in the cache)
    block_table: list[int]  # the KV blocks this sequence owns, in order
    # Logits for every token, not just the last (speculative verification). On CUDA each
    # token is then its own attention row over the same blocks with the context up to
    # itself (causal by construction), so the step stays a decode step for the decode
    # kernel and CUDA graphs; on the CPU the chunk stays whole (one gather of its context,
    # kernels/cpu_attention.chunk_attention).
    all_logits: bool = False
    # Prompt logprobs: targets[i] is the prompt token after position start_pos + i, for the
    # first len(targets) tokens of the chunk; their logprobs are computed (top `top_k`).
    prompt_targets: list[int] | None = None
    prompt_top_k: int = 0


@dataclass
class RunnerOutput:
    logits: torch.Tensor  # as ModelRunner.execute returns them
    # Chunk index -> one entry per prompt target, for chunks that asked.
    prompt_logprobs: dict[int, list[TokenLogprobs]] = field(default_factory=dict)


class ModelRunner:
    """One batched forward per step. On CUDA with the Triton kernels, pure decode steps of
    up to `graph_batch` sequences replay captured CUDA graphs (`max_model_len` sets the
    graphs' block-table width); everything else runs eagerly."""

    def __init__(
        self, model: LlamaForCausalLM, num_blocks: int, block_size: int, device: torch.device,
        *, cuda_graphs: bool = False, graph_batch: int = 0, max_model_len: int = 0,
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
        # all_logits chunks become one decode row per token (CUDA: decode kernel, graphs).
        self.split_all_logits = device.type != "cpu"
        self.graphs: DecodeGraphs | None = None
        if cuda_graphs:
            max_blocks = -(-max_model_len // block_size)
            self.graphs = DecodeGraphs(model, self.kv_caches, graph_batch, max_blocks, device)

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        """Copy-on-write: give a sequence its own copy of a shared block, every layer."""
        if not copies:
            return
        src = torch.tensor([s for s, _ in copies], device=self.device)
        dst = torch.tensor([d for _, d in copies], device=self.device)
        for k_cache, v_cache in self.kv_caches:
            k_cache[dst] = k_cache[src]
            v_cache[dst] = v_cache[src]

    def prepare(self, seqs: list[SequenceChunk]) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """Flat input ids and positions for all sequences, plus where their K/V live."""
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        context_lens: list[int] = []
        query_start_loc = [0]
        tables: list[list[int]] = []
        width = max(len(s.block_table) for s in seqs)
        split = self.split_all_logits
        for seq in seqs:
            pos = range(seq.start_pos, seq.start_pos + len(seq.token_ids))
            input_ids.extend(seq.token_ids)
            positions.extend(pos)
            slots.extend(seq.block_table[p // bs] * bs + p % bs for p in pos)
            table = seq.block_table + [0] * (width - len(seq.block_table))
            if seq.all_logits and split:
                for p in pos:
                    context_lens.append(p + 1)
                    query_start_loc.append(query_start_loc[-1] + 1)
                    tables.append(table)
            else:
                context_lens.append(pos.stop)
                query_start_loc.append(query_start_loc[-1] + len(seq.token_ids))
                tables.append(table)

        def as_tensor(values: list, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=self.device)

        meta = AttentionMetadata(
            slot_mapping=as_tensor(slots),
            block_tables=as_tensor(tables, torch.int32),
            context_lens=as_tensor(context_lens, torch.int32),
            query_start_loc=as_tensor(query_start_loc, torch.int32),
            max_query_len=max(1 if s.all_logits and split else len(s.token_ids) for s in seqs),
        )
        return as_tensor(input_ids), as_tensor(positions), meta

    def execute(self, seqs: list[SequenceChunk]) -> torch.Tensor:
        """One forward over every scheduled token; float32 logits of each sequence's last
        token (of every token, in order, for an `all_logits` sequence)."""
        return self.execute_full(seqs).logits

    @torch.inference_mode()
    def execute_full(self, seqs: list[SequenceChunk]) -> RunnerOutput:
        """`execute`, plus the prompt logprobs of the chunks that asked for them."""
        input_ids, positions, meta = self.prepare(seqs)
        if self.graphs is not None and self.graphs.fits(meta):
            hidden = self.graphs.run(input_ids, positions, meta)
        else:
            hidden = self.model(input_ids, positions, self.kv_caches, meta)
        if not self.split_all_logits and any(s.all_logits for s in seqs):
            rows, end = [], 0
            for s in seqs:
                end += len(s.token_ids)
                rows.extend(range(end - len(s.token_ids), end) if s.all_logits else [end - 1])
            last = torch.tensor(rows, device=hidden.device)
        else:  # one row per sequence (per token of a split all_logits chunk)
            last = meta.query_start_loc[1:].long() - 1
        out = RunnerOutput(self.model.compute_logits(hidden[last]))
        start = 0  # the chunk's first row of `hidden` (one row per token)
        for i, seq in enumerate(seqs):
            if seq.prompt_targets:
                rows = hidden[start : start + len(seq.prompt_targets)]
                out.prompt_logprobs[i] = prompt_logprobs(
                    self.model.compute_logits, rows, seq.prompt_targets, seq.prompt_top_k)
            start += len(seq.token_ids)
        return out
