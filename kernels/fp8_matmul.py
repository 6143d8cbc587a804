"""W8A8 FP8 GEMM in Triton: y[M, N] = dequant(a[M, K]) @ dequant(b[N, K]).T (+ bias).

One kernel body; the launcher picks a tier of autotuned configs by M:
- M > 64 (prefill): output tiles in grouped order for L2 reuse, fp32 accumulation, scales
  applied once in the epilogue (per-token x per-channel/per-tensor), bias, cast, store.
- M <= 16 (decode) and 16 < M <= 64: too few output tiles to fill the GPU, and M <= 16 is
  memory-bound, so the K range may be split across programs (split-K) to put enough loads
  in flight to stream the weight at full bandwidth. Each split stores its scaled fp32 partial
  tile (plain stores: no zeroing, deterministic), and a small second pass sums the splits and
  casts; with one split the GEMM writes the output directly.
Block-scaled weights (128x128) take 1x128 activation groups and apply both scales to each
128-wide K slab's partial product inside the K loop.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from kernels.fp8_quant import FP8_DTYPE, quantize_fp8_per_group, quantize_fp8_per_token

SCALE_BLOCK = 128  # block-scaled weights: 128x128 blocks, activations in 1x128 groups
# Autotuning is meaningless (and slow) in the interpreter: one small fixed config there.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _cfg(bm: int, bn: int, bk: int, warps: int, stages: int, split: int = 1) -> triton.Config:
    meta = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "SPLIT_K": split}
    return triton.Config(meta, num_warps=warps, num_stages=stages)


# Hopper: fp8 wgmma wants K-major operands in 128-wide K steps; 8 warps (two warpgroups) for
# the 128x256 tiles; 3-4 stages fit the 227 KB of shared memory.
_BIG_CONFIGS = [
    _cfg(128, 256, 128, 8, 3), _cfg(256, 128, 128, 8, 3), _cfg(128, 128, 128, 8, 4),
    _cfg(128, 128, 128, 4, 4), _cfg(64, 256, 128, 4, 3), _cfg(64, 128, 128, 4, 4),
    _cfg(128, 64, 128, 4, 4), _cfg(64, 64, 128, 4, 5), _cfg(32, 64, 128, 4, 5),
]
# Decode: a 16-row tile (the smallest MMA), narrow N tiles and split-K for parallelism, deep
# pipelines to keep bytes in flight.
_SKINNY_CONFIGS = [
    _cfg(16, bn, bk, 4, stages, split)
    for bn, bk, stages in ((32, 256, 4), (64, 128, 5), (64, 256, 4), (128, 128, 4))
    for split in (1, 2, 4, 8)
]
_MEDIUM_CONFIGS = [
    _cfg(bm, bn, 128, 4, stages, split)
    for bm, bn, stages in ((32, 64, 5), (32, 128, 4), (64, 64, 5), (64, 128, 4))
    for split in (1, 2, 4)
] + [_cfg(64, 256, 128, 4, 3)]
_INTERPRET_SKINNY = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 1, "SPLIT_K": 3}
_INTERPRET_MEDIUM = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2, "SPLIT_K": 2}
_INTERPRET_BIG = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2, "SPLIT_K": 1}


def config_smem_bytes(config: triton.Config) -> int:
    """Shared memory of a config's software pipeline: num_stages fp8 (1-byte) A and B tiles.
    The compiler's figure matches it (kernels/aot checks it against every compiled config)."""
    m, n, k = (config.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    return config.num_stages * (m * k + n * k)


def prune_configs(configs: list[triton.Config], smem_limit: int,
                  block_scaled: bool) -> list[triton.Config]:
    """The configs that can run: their pipeline fits the device's shared memory (an sm_89
    block gets 99 KB, an H100's 227 KB), and with block-scaled weights BLOCK_K divides the
    128-wide scale slab."""
    kept = [c for c in configs if config_smem_bytes(c) <= smem_limit]
    if block_scaled:
        kept = [c for c in kept if SCALE_BLOCK % c.kwargs["BLOCK_K"] == 0]
    return kept


def supports_fp8(capability: tuple[int, int]) -> bool:
    """fp8 (e4m3) tensor-core MMA exists from sm_89 (Ada: L4, RTX 4090) and sm_90 (Hopper)."""
    return tuple(capability) >= (8, 9)


def require_fp8_device(device: torch.device) -> None:
    """Refuse a GPU without fp8 MMA with a clear error (the compiler's would be obscure)."""
    if device.type != "cuda":
        return
    capability = torch.cuda.get_device_capability(device)
    if not supports_fp8(capability):
        name = torch.cuda.get_device_name(device)
        raise RuntimeError(
            f"FP8 GEMM needs compute capability 8.9 or newer (L4, RTX 4090, H100); {name} is "
            f"sm_{capability[0]}{capability[1]}. Run this model unquantized (bf16) on it."
        )


@functools.cache
def _smem_limit(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).shared_memory_per_block_optin


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Autotune's early prune: the configs this device can run (see prune_configs)."""
    limit = _smem_limit(torch.cuda.current_device())
    return prune_configs(configs, limit, bool(kwargs.get("BLOCK_SCALED")))


@triton.jit
def _fp8_gemm_kernel(
    a_ptr, b_ptr, c_ptr, ws_ptr, as_ptr, bs_ptr, bias_ptr,
    M, N, K, M_BUCKET,
    stride_am, stride_bn, stride_cm, stride_asm, stride_ask, stride_bsn, stride_bsk,
    BLOCK_SCALED: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr, EVEN_K: tl.constexpr,
):
    # Grouped tile order: GROUP_M row-tiles sweep the N tiles together, so B stays in L2.
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * num_n
    first_m = (pid // width) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = (offs_m % M).to(tl.int64)  # wrapped rows/cols: loads need no M/N mask
    rn = (offs_n % N).to(tl.int64)
    # This program's share of K: whole BLOCK_K tiles, the last split clipped to K. With EVEN_K
    # every split is whole tiles: unmasked loads, which vectorize.
    tiles = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K)
    k_start = pid_k * tiles * BLOCK_K
    k_end = tl.minimum(K, k_start + tiles * BLOCK_K)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rm[:, None] * stride_am + (k_start + offs_k)[None, :]
    b_ptrs = b_ptr + rn[None, :] * stride_bn + (k_start + offs_k)[:, None]  # K-major B tile
    as_ptrs = as_ptr + rm * stride_asm
    if BLOCK_SCALED:
        bs_ptrs = bs_ptr + (rn // 128) * stride_bsn
    else:
        bs_ptrs = bs_ptr + rn * stride_bsn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_start, k_end, BLOCK_K):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_mask = offs_k < k_end - k
            a = tl.load(a_ptrs, mask=k_mask[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=k_mask[:, None], other=0.0)
        if BLOCK_SCALED:
            slab = k // 128
            a_s = tl.load(as_ptrs + slab * stride_ask)
            b_s = tl.load(bs_ptrs + slab * stride_bsk)
            acc += tl.dot(a, b) * (a_s[:, None] * b_s[None, :])
        else:
            acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K

    if not BLOCK_SCALED:  # per-token x per-channel (or per-tensor) scales, once per tile
        acc = acc * (tl.load(as_ptrs)[:, None] * tl.load(bs_ptrs)[None, :])
    if HAS_BIAS:
        bias = tl.load(bias_ptr + rn).to(tl.float32)
        if SPLIT_K > 1:
            bias = bias * (pid_k == 0).to(tl.float32)  # added by one split only
        acc += bias[None, :]
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if SPLIT_K > 1:  # fp32 partials [SPLIT_K, M, N], summed by _split_k_reduce_kernel
        rows = pid_k.to(tl.int64) * M + offs_m
        tl.store(ws_ptr + rows[:, None] * N + offs_n[None, :], acc, mask=mask)
    else:
        c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _split_k_reduce_kernel(ws_ptr, c_ptr, numel, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    """c (contiguous [M, N]) = the sum of the SPLIT_K fp32 partials, cast to c's dtype."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(ws_ptr + s * numel + offs, mask=mask, other=0.0)
    tl.store(c_ptr + offs, acc.to(c_ptr.dtype.element_ty), mask=mask)


_KEY = ["M_BUCKET", "N", "K", "BLOCK_SCALED"]
# Derived from the chosen config: runs after autotune picks BLOCK_K and SPLIT_K.
_with_even_k = triton.heuristics(
    {"EVEN_K": lambda args: args["K"] % (args["BLOCK_K"] * args["SPLIT_K"]) == 0}
)(_fp8_gemm_kernel)


def _tier(configs: list[triton.Config], interpret_meta: dict) -> tuple[object, dict, int]:
    """(kernel, meta to pass, largest SPLIT_K) for one range of M."""
    if _INTERPRET:
        return _with_even_k, interpret_meta, interpret_meta["SPLIT_K"]
    kernel = triton.autotune(configs, key=_KEY, prune_configs_by={"early_config_prune": _prune})
    return kernel(_with_even_k), {}, max(c.kwargs["SPLIT_K"] for c in configs)


# (largest M, tier): the first tier whose bound covers M runs it.
_TIERS = [
    (16, _tier(_SKINNY_CONFIGS, _INTERPRET_SKINNY)),
    (64, _tier(_MEDIUM_CONFIGS, _INTERPRET_MEDIUM)),
    (None, _tier(_BIG_CONFIGS, _INTERPRET_BIG)),
]


def _weight_scale_strides(scale: torch.Tensor, n: int, k: int) -> tuple[bool, int, int]:
    """(block_scaled, stride over N, stride over K) for a per-tensor, [N] or 2-D block scale."""
    if scale.dtype != torch.float32:
        raise ValueError(f"weight_scale must be float32, got {scale.dtype}")
    if scale.dim() == 2:
        want = (triton.cdiv(n, SCALE_BLOCK), triton.cdiv(k, SCALE_BLOCK))
        if tuple(scale.shape) != want:
            raise ValueError(f"block weight_scale must have shape {want}, got {tuple(scale.shape)}")
        return True, scale.stride(0), scale.stride(1)
    if scale.numel() == 1 and scale.dim() <= 1:
        return False, 0, 0  # per tensor: every column reads the one value
    if scale.dim() == 1 and scale.shape[0] == n:
        return False, scale.stride(0), 0
    raise ValueError(f"weight_scale must be 0-d/[1], [{n}] or 2-D blocks, got {tuple(scale.shape)}")


def fp8_gemm(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """fp8 a[M, K] (scale [M] per token or [M, K/128] per group) x fp8 b[N, K] -> [M, N]."""
    if a.dtype != FP8_DTYPE or b.dtype != FP8_DTYPE:
        raise ValueError(f"fp8_gemm takes {FP8_DTYPE} operands, got {a.dtype} and {b.dtype}")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"shapes do not chain: a {tuple(a.shape)}, b {tuple(b.shape)}")
    if a.stride(1) != 1 or b.stride(1) != 1:
        raise ValueError("fp8_gemm needs both operands contiguous along K")
    require_fp8_device(a.device)
    m, k = a.shape
    n = b.shape[0]
    block_scaled, stride_bsn, stride_bsk = _weight_scale_strides(b_scale, n, k)
    if a_scale.dim() == 2 and (not block_scaled or a_scale.shape != (m, triton.cdiv(k, 128))):
        raise ValueError("per-group activation scales need block-scaled weights of matching K")
    if a_scale.dtype != torch.float32 or a_scale.dim() not in (1, 2):
        raise ValueError(f"a_scale must be a float32 [M] or [M, groups] tensor, got {a_scale.dtype}")
    if a_scale.dim() == 1 and a_scale.shape[0] != m:
        raise ValueError(f"a_scale must have {m} rows, got {tuple(a_scale.shape)}")
    stride_asm = a_scale.stride(0)
    stride_ask = a_scale.stride(1) if a_scale.dim() == 2 else 0  # per token: every slab, one scale
    if bias is not None and tuple(bias.shape) != (n,):
        raise ValueError(f"bias must have shape ({n},), got {tuple(bias.shape)}")
    if out is not None and (tuple(out.shape) != (m, n) or out.dtype != out_dtype
                            or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous {out_dtype} [{m}, {n}] tensor")
    c = out if out is not None else torch.empty((m, n), dtype=out_dtype, device=a.device)
    if m == 0 or n == 0:
        return c

    kernel, meta, max_split = next(t for bound, t in _TIERS if bound is None or m <= bound)
    # Split-K partials, for the largest split: autotuning picks the config inside the call.
    ws = c if max_split == 1 else torch.empty((max_split, m, n), dtype=torch.float32,
                                               device=a.device)

    def grid(meta: dict) -> tuple[int, int]:
        tiles = triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"])
        return tiles, meta["SPLIT_K"]

    kernel[grid](
        a, b, c, ws, a_scale, b_scale, bias if bias is not None else b_scale,
        m, n, k, min(triton.next_power_of_2(m), 4096),
        a.stride(0), b.stride(0), c.stride(0), stride_asm, stride_ask, stride_bsn, stride_bsk,
        BLOCK_SCALED=block_scaled, HAS_BIAS=bias is not None, **meta,
    )
    split = meta["SPLIT_K"] if _INTERPRET else kernel.best_config.kwargs["SPLIT_K"]
    if split > 1:
        block = 1024
        _split_k_reduce_kernel[(triton.cdiv(m * n, block),)](
            ws, c, m * n, SPLIT_K=split, BLOCK=block
        )
    return c


def fp8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    input_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """y[M, N] = x @ dequant(weight).T + bias in x's dtype; x is quantized to fp8 here.

    Per token (dynamic), or per 1x128 group when weight_scale is 2-D (block-scaled), or the
    static per-tensor input_scale when one is given.
    """
    if x.dim() != 2:
        raise ValueError(f"fp8_linear expects a 2-D x [M, K], got shape {tuple(x.shape)}")
    if weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"x {tuple(x.shape)} does not chain with weight {tuple(weight.shape)}")
    if input_scale is not None and input_scale.numel() != 1:
        raise ValueError(f"input_scale must be per tensor, got shape {tuple(input_scale.shape)}")
    x = x if x.stride(1) == 1 else x.contiguous()
    weight_scale = weight_scale.float()  # a no-op for the usual fp32 checkpoint scales
    if weight_scale.dim() == 2 and input_scale is None:
        a, a_scale = quantize_fp8_per_group(x, SCALE_BLOCK)
    else:
        a, a_scale = quantize_fp8_per_token(x, input_scale)
    return fp8_gemm(a, a_scale, weight, weight_scale, bias, out_dtype=x.dtype)
