"""Slow, obviously-correct torch versions of every kernel; the CPU path and the tests' oracle."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels import cpu_attention


def _into(out: torch.Tensor | None, result: torch.Tensor) -> torch.Tensor:
    """The contract's optional output buffer: copy the result into it when one is given."""
    if out is None:
        return result
    if out.shape != result.shape or out.dtype != result.dtype:
        raise ValueError(f"out must be {result.dtype} {tuple(result.shape)}, got "
                         f"{out.dtype} {tuple(out.shape)}")
    return out.copy_(result)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """RMSNorm computed in float32 (as HF Llama does), cast back to the input dtype."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return _into(out, weight * xf.to(x.dtype))


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual): the pre-norm residual stream in one op."""
    new_residual = x + residual
    return rms_norm(new_residual, weight, eps), new_residual


def silu_and_mul(gate_up: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """SwiGLU: silu(gate) * up, where the last dimension holds [gate | up]."""
    gate, up = gate_up.chunk(2, dim=-1)
    return _into(out, F.silu(gate) * up)


def rotary_embedding(
    positions: torch.Tensor,
    x: torch.Tensor,
    inv_freq: torch.Tensor,
    out: torch.Tensor | None = None,
    plan: object | None = None,
) -> torch.Tensor:
    """Apply rotary embeddings in the HF (non-interleaved, rotate-half) layout.

    x: [num_tokens, num_heads, head_dim]; positions: [num_tokens]; inv_freq: [head_dim // 2].
    The reference plans nothing (plan_step gives None): `plan` is ignored.
    """
    del plan
    freqs = positions.float()[:, None] * inv_freq.float()[None, :]
    cos = freqs.cos()[:, None, :].to(x.dtype)
    sin = freqs.sin()[:, None, :].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return _into(out, torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1))


def write_kv_cache(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    plan: object | None = None,
) -> None:
    """Store new keys/values at their slots; slot = block * block_size + offset.

    k, v: [num_tokens, num_kv_heads, head_dim];
    caches: [num_blocks, block_size, kv_heads, head_dim]. `plan` is ignored.
    """
    del plan
    # A negative slot marks a padding token (CUDA-graph batches): nothing is written for it.
    if bool((slot_mapping < 0).any()):
        keep = slot_mapping >= 0
        k, v, slot_mapping = k[keep], v[keep], slot_mapping[keep]
    # index_copy_ on 2-D views: several times faster on the CPU than advanced indexing.
    row = k_cache.shape[2] * k_cache.shape[3]
    k_cache.view(-1, row).index_copy_(0, slot_mapping, k.reshape(-1, row))
    v_cache.view(-1, row).index_copy_(0, slot_mapping, v.reshape(-1, row))


DECODE_GROUP = 8  # decode sequences per padded attention call


def gather_blocks(cache: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """cache[tables] -> [*tables.shape, block_size, kv_heads, head_dim].

    index_select over whole blocks as rows is several times faster on the CPU than the
    equivalent advanced indexing.
    """
    rows = cache.view(cache.shape[0], -1).index_select(0, tables.reshape(-1))
    return rows.view(*tables.shape, *cache.shape[1:])


def gather_context(cache: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """The first `length` cached positions of one sequence: [length, kv_heads, head_dim]."""
    block_size = cache.shape[1]
    blocks = block_table[: -(-length // block_size)]
    return gather_blocks(cache, blocks).flatten(0, 1)[:length]


def _paged_attention_lists(
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
    query j attends to keys [0, context_len - q_len + j]. Single-token (decode) sequences
    are batched into one padded call; the others go one by one.
    """
    out = torch.empty_like(q)
    q_lens = [query_start_loc[i + 1] - query_start_loc[i] for i in range(len(context_lens))]
    # Decodes sorted by context length and padded in groups: less padding to gather.
    decode = sorted((i for i, n in enumerate(q_lens) if n == 1), key=lambda i: context_lens[i])
    if decode and q.device.type == "cpu":
        rows = torch.tensor([query_start_loc[i] for i in decode])
        out[rows] = cpu_attention.paged_decode_attention(
            q[rows], k_cache, v_cache, block_tables[decode],
            torch.tensor([context_lens[i] for i in decode]), scale,
        )
        decode = []
    for g in range(0, len(decode), DECODE_GROUP):
        group = decode[g : g + DECODE_GROUP]
        rows = torch.tensor([query_start_loc[i] for i in group], device=q.device)
        out[rows] = _decode_attention(
            q[rows], k_cache, v_cache, block_tables[group], [context_lens[i] for i in group], scale
        )
    for i, ctx in enumerate(context_lens):
        if q_lens[i] > 1:
            start, end = query_start_loc[i], query_start_loc[i + 1]
            out[start:end] = _prefill_attention(
                q[start:end], k_cache, v_cache, block_tables[i], ctx, scale
            )
    return out


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    max_query_len: int,
    scale: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The kernel contract's paged_attention: the same math with index tensors.

    max_query_len is what a kernel sizes its grid with; the reference needs no hint.
    """
    del max_query_len
    return _into(out, _paged_attention_lists(
        q, k_cache, v_cache, block_tables, [int(n) for n in context_lens.tolist()],
        [int(n) for n in query_start_loc.tolist()], scale,
    ))


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    plan: object | None = None,
) -> torch.Tensor:
    """One query per sequence: q [batch, heads, head_dim]; a row with context 0 gives zeros.

    num_splits only shapes a kernel's launch; the reference ignores it, and `plan`.
    """
    del num_splits, plan
    if q.device.type == "cpu":  # padded groups through SDPA (kernels/cpu_attention.py)
        return _into(out, cpu_attention.paged_decode_attention(
            q, k_cache, v_cache, block_tables, context_lens, scale
        ))
    result = torch.zeros_like(q)
    lens = [int(n) for n in context_lens.tolist()]
    rows = [i for i, n in enumerate(lens) if n > 0]  # zero-length rows are CUDA-graph padding
    for g in range(0, len(rows), DECODE_GROUP):
        group = rows[g : g + DECODE_GROUP]
        idx = torch.tensor(group, device=q.device)
        result[idx] = _decode_attention(
            q[idx], k_cache, v_cache, block_tables[idx], [lens[i] for i in group], scale
        )
    return _into(out, result)


def plan_step(
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    dtype: torch.dtype,
    slot_mapping: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    block_size: int,
    decode: bool,
) -> object | None:
    """The references (and the Triton kernels) plan nothing: every op reads its tensors."""
    return None


def _prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    ctx: int,
    scale: float,
) -> torch.Tensor:
    """A chunk of q_len new queries, the last of `ctx` positions: [q_len, heads, head_dim]."""
    q_len = q.shape[0]
    k = gather_context(k_cache, block_table, ctx).transpose(0, 1)
    v = gather_context(v_cache, block_table, ctx).transpose(0, 1)
    if q.device.type == "cpu" and q_len < ctx and q_len <= cpu_attention.SMALL_CHUNK_MAX:
        return cpu_attention.chunk_attention(q, k, v, scale)  # SDPA's masked path costs more
    if q_len == ctx:  # a whole prompt: plain causal, which lets SDPA pick a fused kernel
        o = F.scaled_dot_product_attention(
            q.transpose(0, 1), k, v, is_causal=True, scale=scale, enable_gqa=True
        )
    else:
        q_pos = torch.arange(ctx - q_len, ctx, device=q.device)
        mask = torch.arange(ctx, device=q.device)[None, :] <= q_pos[:, None]
        o = F.scaled_dot_product_attention(
            q.transpose(0, 1), k, v, attn_mask=mask, scale=scale, enable_gqa=True
        )
    return o.transpose(0, 1)


def _decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: list[int],
    scale: float,
) -> torch.Tensor:
    """One query per sequence over its context, all sequences in one padded SDPA call.

    q: [batch, num_heads, head_dim] -> [batch, num_heads, head_dim].
    """
    block_size = k_cache.shape[1]
    max_len = max(context_lens)
    tables = block_tables[:, : -(-max_len // block_size)]
    k = gather_blocks(k_cache, tables).flatten(1, 2)  # [batch, padded_len, kv_heads, head_dim]
    v = gather_blocks(v_cache, tables).flatten(1, 2)
    lens = torch.tensor(context_lens, device=q.device)
    mask = torch.arange(k.shape[1], device=q.device)[None, :] < lens[:, None]
    o = F.scaled_dot_product_attention(
        q[:, :, None, :], k.transpose(1, 2), v.transpose(1, 2),
        attn_mask=mask[:, None, None, :], scale=scale, enable_gqa=True,
    )
    return o[:, :, 0, :]


# ---------------------------------------------------------------------------------------------
# FP8 (float8_e4m3fn) quantization and W8A8 linear.
#
# Scales are amax / 448 with a floor, so an all-zero row (or block) gets a tiny scale instead of
# a division by zero. The Triton kernels compute the same fp32 operations in the same order, so
# their quantized values match these bit for bit (the tests check it).
# ---------------------------------------------------------------------------------------------

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
FP8_MIN_SCALE = 1e-12
FP8_BLOCK = 128  # block-scaled checkpoints: 128x128 weight blocks, 1x128 activation groups


def _to_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale in fp32, saturated to the fp8 range (the cast alone would give NaN above 448)."""
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def _amax_scale(amax: torch.Tensor) -> torch.Tensor:
    return (amax.float() / FP8_MAX).clamp_min(FP8_MIN_SCALE)


def quantize_fp8_per_token(
    x: torch.Tensor, input_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x[M, K] -> (fp8 [M, K], fp32 scale [M]): one dynamic scale per row, or the static one."""
    if input_scale is not None:
        scale = input_scale.float().reshape(1).expand(x.shape[0])
    else:
        scale = _amax_scale(x.float().abs().amax(dim=1))
    return _to_fp8(x, scale[:, None]), scale.contiguous()


def quantize_fp8_per_group(
    x: torch.Tensor, group_size: int = FP8_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """x[M, K] -> (fp8 [M, K], fp32 scale [M, ceil(K / group_size)]): one scale per 1 x group."""
    m, k = x.shape
    groups = -(-k // group_size)
    padded = F.pad(x.float(), (0, groups * group_size - k)).view(m, groups, group_size)
    scale = _amax_scale(padded.abs().amax(dim=2))
    q = _to_fp8(padded, scale[:, :, None]).view(m, -1)[:, :k]
    return q.contiguous(), scale


def quantize_fp8_weight(
    w: torch.Tensor, block_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """w[N, K] -> (fp8 [N, K], scale): per output channel ([N]) or per block ([N/bs, K/bs])."""
    if w.dim() != 2:
        raise ValueError(f"quantize_fp8_weight expects a 2-D weight, got shape {tuple(w.shape)}")
    if block_size is None:
        scale = _amax_scale(w.float().abs().amax(dim=1))
        return _to_fp8(w, scale[:, None]), scale
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    n, k = w.shape
    nb, kb = -(-n // block_size), -(-k // block_size)
    padded = F.pad(w.float(), (0, kb * block_size - k, 0, nb * block_size - n))
    blocks = padded.view(nb, block_size, kb, block_size)
    scale = _amax_scale(blocks.abs().amax(dim=(1, 3)))
    q = _to_fp8(blocks, scale[:, None, :, None]).view(nb * block_size, kb * block_size)
    return q[:n, :k].contiguous(), scale


def dequantize_fp8_weight(
    w: torch.Tensor, scale: torch.Tensor, block_size: int = FP8_BLOCK
) -> torch.Tensor:
    """fp8 w[N, K] and a per-tensor, per-channel or 2-D block scale -> fp32 [N, K]."""
    n, k = w.shape
    if scale.dim() == 2:
        full = scale.float().repeat_interleave(block_size, 0)[:n]
        return w.float() * full.repeat_interleave(block_size, 1)[:, :k]
    return w.float() * scale.float().reshape(-1, 1)  # [1] or [N] broadcasts over rows


def fp8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    input_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = x @ dequant(weight).T + bias, x quantized to fp8 exactly as the Triton path does.

    Activations: per token (dynamic) or the static per-tensor input_scale; 1x128 groups when
    the weight is block-scaled (2-D weight_scale) and no input_scale is given.
    """
    if weight_scale.dim() == 2 and input_scale is None:
        xq, xs = quantize_fp8_per_group(x, FP8_BLOCK)
        x_deq = xq.float() * xs.repeat_interleave(FP8_BLOCK, 1)[:, : x.shape[1]]
    else:
        xq, xs = quantize_fp8_per_token(x, input_scale)
        x_deq = xq.float() * xs[:, None]
    y = x_deq @ dequantize_fp8_weight(weight, weight_scale).t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
