"""A hand-written Llama (2/3/3.1/3.2, SmolLM2, TinyLlama shapes) over a paged KV cache.

The forward pass works on a flat batch of tokens ([num_tokens, hidden]) from any number of
sequences; AttentionMetadata says where each token belongs.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
from torch import nn

from engine.config import ModelConfig
from engine.model.attention import AttentionMetadata, attention
from engine.model.fp8 import Fp8Spec
from engine.model.layers import MLP, RMSNorm, RotaryEmbedding, make_linear

if TYPE_CHECKING:
    from engine.parallel.comm import TPComm
    from engine.parallel.layout import TPLayout

KVCache = tuple[torch.Tensor, torch.Tensor]


class LlamaAttention(nn.Module):
    """With tensor parallelism `config` is the rank's share (its heads) and o_proj's partial
    output is summed over ranks (`comm`); without, comm is None and nothing extra runs."""

    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding, ops: SimpleNamespace,
                 fp8: Fp8Spec | None, comm: TPComm | None = None) -> None:
        super().__init__()
        self.config = config
        self.comm = comm
        self.rotary = rotary
        self.ops = ops
        qkv_out = config.q_size + 2 * config.kv_size
        bias = config.attention_bias
        self.qkv_proj = make_linear(config.hidden_size, qkv_out, bias, fp8, ops)
        self.o_proj = make_linear(config.q_size, config.hidden_size, bias, fp8, ops)
        self.scale = config.head_dim**-0.5

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, kv_cache: KVCache, meta: AttentionMetadata
    ) -> torch.Tensor:
        c = self.config
        heads = c.num_heads + 2 * c.num_kv_heads
        qkv = self.qkv_proj(x).view(-1, heads, c.head_dim)
        # q's and k's heads are adjacent in qkv: one rotary call turns both (half the ops).
        qk, v = qkv.split([c.num_heads + c.num_kv_heads, c.num_kv_heads], dim=1)
        q, k = self.rotary(positions, qk, meta.plan).split([c.num_heads, c.num_kv_heads], dim=1)
        out = attention(q, k, v, kv_cache, meta, self.scale, self.ops)
        out = self.o_proj(out.reshape(-1, c.q_size))
        return out if self.comm is None else self.comm.all_reduce(out)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, rotary: RotaryEmbedding, ops: SimpleNamespace,
                 fp8: Fp8Spec | None, comm: TPComm | None = None) -> None:
        super().__init__()
        size, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = RMSNorm(size, eps, ops)
        self.self_attn = LlamaAttention(config, rotary, ops, fp8, comm)
        self.post_attention_layernorm = RMSNorm(size, eps, ops)
        self.mlp = MLP(config, ops, fp8, comm)

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, residual: torch.Tensor | None,
        kv_cache: KVCache, meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x is the previous sublayer's output, not yet added to the residual stream: the add
        is fused into the next norm. Returns (this layer's MLP output, residual stream)."""
        h, residual = self.input_layernorm(x, residual)
        h = self.self_attn(positions, h, kv_cache, meta)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class LlamaForCausalLM(nn.Module):
    """Embedding -> N decoder layers -> final norm -> LM head (tied or separate).

    Tensor-parallel (`comm` and `layout` given): `config` is the rank's share; the
    embedding and LM head hold the rank's vocabulary rows (layout.vocab_start onwards).
    """

    def __init__(self, config: ModelConfig, ops: SimpleNamespace, fp8: Fp8Spec | None = None,
                 comm: TPComm | None = None, layout: TPLayout | None = None) -> None:
        super().__init__()
        self.config = config
        self.ops = ops
        if (comm is None) != (layout is None):
            raise ValueError("tensor parallelism needs both the group (comm) and the layout")
        self.comm = comm
        # This rank's first vocabulary row and the whole vocabulary (its logits are cut to it).
        self.vocab_start = 0 if layout is None else layout.vocab_start
        self.full_vocab = config.vocab_size if layout is None else layout.full.vocab_size
        self.rotary = RotaryEmbedding(config, ops)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, self.rotary, ops, fp8, comm) for _ in range(config.num_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        if config.tie_word_embeddings:
            self.lm_head = None
        else:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[KVCache],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """Final hidden states of every token: [num_tokens, hidden]."""
        if self.comm is None:
            x = self.embed_tokens(input_ids)
        else:
            x = self.comm.all_reduce(self._embed_shard(input_ids))
        # What every layer would work out again from the step's indices, once (CPU: rotary
        # tables, padding, decode grouping; the Triton kernels plan nothing).
        meta = replace(meta, plan=self.ops.plan_step(
            positions, self.rotary.inv_freq, x.dtype, meta.slot_mapping, meta.block_tables,
            meta.context_lens, kv_caches[0][0].shape[1], meta.max_query_len == 1,
        ))
        residual = None
        for layer, kv_cache in zip(self.layers, kv_caches):
            x, residual = layer(positions, x, residual, kv_cache, meta)
        return self.norm(x, residual)[0]

    def _embed_shard(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Vocab-parallel lookup: each rank embeds the ids in its rows (zeros for the others'
        ids), so the sum over ranks is every token's embedding."""
        local = input_ids - self.vocab_start
        outside = (local < 0) | (local >= self.embed_tokens.num_embeddings)
        x = self.embed_tokens(local.masked_fill(outside, 0))
        return x.masked_fill_(outside[:, None], 0.0)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits in float32 for the rows the sampler needs (usually each sequence's last)."""
        if self.lm_head is None:
            logits = hidden @ self.embed_tokens.weight.t()
        else:
            logits = self.lm_head(hidden)  # nn.Linear, or Int8Linear after quantization
        if self.comm is not None:  # every rank's vocabulary rows, the padding cut off
            logits = self.comm.gather_last_dim(logits)[:, : self.full_vocab]
        return logits.float()
