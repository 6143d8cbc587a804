"""Slow, obviously-correct torch versions of every kernel; the CPU path and the tests' oracle."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm computed in float32 (as HF Llama does), cast back to the input dtype."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SwiGLU: silu(gate) * up, where the last dimension holds [gate | up]."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def rotary_embedding(
    positions: torch.Tensor, x: torch.Tensor, inv_freq: torch.Tensor
) -> torch.Tensor:
    """Apply rotary embeddings in the HF (non-interleaved, rotate-half) layout.

    x: [num_tokens, num_heads, head_dim]; positions: [num_tokens]; inv_freq: [head_dim // 2].
    """
    freqs = positions.float()[:, None] * inv_freq.float()[None, :]
    cos = freqs.cos()[:, None, :].to(x.dtype)
    sin = freqs.sin()[:, None, :].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def write_kv_cache(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Store new keys/values at their slots; slot = block * block_size + offset.

    k, v: [num_tokens, num_kv_heads, head_dim]; caches: [num_blocks, block_size, kv_heads, head_dim].
    """
    num_blocks, block_size = k_cache.shape[:2]
    k_cache.view(num_blocks * block_size, *k_cache.shape[2:])[slot_mapping] = k
    v_cache.view(num_blocks * block_size, *v_cache.shape[2:])[slot_mapping] = v


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: list[int],
    query_start_loc: list[int],
    scale: float,
) -> torch.Tensor:
    """Causal attention of each sequence's new queries over its whole paged context.

    q: [num_tokens, num_heads, head_dim], sequences packed back to back as query_start_loc
    says. The last `q_len` of a sequence's `context_len` positions are its new tokens, so
    query j attends to keys [0, context_len - q_len + j].
    """
    block_size = k_cache.shape[1]
    num_heads, num_kv_heads = q.shape[1], k_cache.shape[2]
    out = torch.empty_like(q)
    for i, ctx in enumerate(context_lens):
        start, end = query_start_loc[i], query_start_loc[i + 1]
        q_len = end - start
        num_blocks = -(-ctx // block_size)
        blocks = block_tables[i, :num_blocks]
        k = k_cache[blocks].reshape(-1, num_kv_heads, k_cache.shape[-1])[:ctx]
        v = v_cache[blocks].reshape(-1, num_kv_heads, v_cache.shape[-1])[:ctx]
        if num_heads != num_kv_heads:  # GQA: each KV head serves a group of query heads
            k = k.repeat_interleave(num_heads // num_kv_heads, dim=1)
            v = v.repeat_interleave(num_heads // num_kv_heads, dim=1)
        q_pos = torch.arange(ctx - q_len, ctx, device=q.device)
        mask = torch.arange(ctx, device=q.device)[None, :] <= q_pos[:, None]
        o = F.scaled_dot_product_attention(
            q[start:end].transpose(0, 1),
            k.transpose(0, 1),
            v.transpose(0, 1),
            attn_mask=mask,
            scale=scale,
        )
        out[start:end] = o.transpose(0, 1)
    return out
