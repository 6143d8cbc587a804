"""Every kernel launch worth compiling ahead of time: each family, autotune config and dtype,
with the arguments a launch at Llama-3.1-8B, Llama-3.2-1B and SmolLM2-135M shapes passes.

The values mirror the launchers (same tile helpers, same config lists), so a change there
shows up here. Tensors are `Ptr`s: only their element type and alignment matter to the compiler.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import triton
from triton.runtime.jit import JITFunction

from kernels import (
    activation,
    decode_attention,
    fp8_matmul,
    fp8_quant,
    kv_cache,
    norm,
    prefill_attention,
    rotary,
)
from kernels._launch import pow2
from kernels.aot.specialize import Ptr
from kernels.paged_tiles import LOG2E, dot_precision, gpu_tiles

KV_BLOCK = 16  # the engine's KV-cache block size
MAX_BLOCKS = 512  # block-table width: 8k context
BATCH = 8


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    inter: int
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def qkv(self) -> int:
        return (self.heads + 2 * self.kv_heads) * self.head_dim


MODELS = (
    ModelShape("llama-3.1-8b", 4096, 14336, 32, 8, 128),
    ModelShape("llama-3.2-1b", 2048, 8192, 32, 8, 64),
    ModelShape("smollm2-135m", 576, 1536, 9, 3, 64),
)
LLAMA_8B = MODELS[0]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Case:
    family: str  # the launcher: fp8_gemm, decode_attention, rms_norm, ...
    kernel: JITFunction
    config: str  # the launch config's label (tile sizes, warps, stages)
    dtype: str
    model: str
    args: dict[str, Any] = field(repr=False)
    num_warps: int = 4
    num_stages: int = 3
    hot: bool = True  # on the decode/prefill critical path: must not spill
    fp8: bool = False  # needs fp8 MMA (sm_89+)
    tier: str = ""  # FP8 GEMM: skinny / medium / big
    representative: bool = True  # compiled in CI; the report compiles every case
    smem_estimate: int | None = None  # the launcher's own shared-memory figure, if it has one

    @property
    def label(self) -> str:
        parts = [self.family, self.tier, self.config, self.dtype, self.model]
        return " ".join(p for p in parts if p)


def _gemm_config_label(c: triton.Config) -> str:
    k = c.kwargs
    return (f"{k['BLOCK_M']}x{k['BLOCK_N']}x{k['BLOCK_K']} split{k['SPLIT_K']} "
            f"w{c.num_warps} s{c.num_stages}")


# (tier, configs, M launched, the config CI compiles: the first of each tier)
FP8_TIERS = (
    ("skinny", fp8_matmul._SKINNY_CONFIGS, 1),
    ("medium", fp8_matmul._MEDIUM_CONFIGS, 64),
    ("big", fp8_matmul._BIG_CONFIGS, 1024),
)


def _fp8_gemm_args(c: triton.Config, m: int, n: int, k: int, out: str,
                   block_scaled: bool) -> dict[str, Any]:
    split = c.kwargs["SPLIT_K"]
    groups = triton.cdiv(k, fp8_matmul.SCALE_BLOCK)
    return {
        "a_ptr": Ptr("fp8e4nv"), "b_ptr": Ptr("fp8e4nv"), "c_ptr": Ptr(out),
        "ws_ptr": Ptr("fp32" if split > 1 else out), "as_ptr": Ptr("fp32"),
        "bs_ptr": Ptr("fp32"), "bias_ptr": Ptr("fp32"),
        "M": m, "N": n, "K": k, "M_BUCKET": min(triton.next_power_of_2(m), 4096),
        "stride_am": k, "stride_bn": k, "stride_cm": n,
        "stride_asm": groups if block_scaled else 1, "stride_ask": 1 if block_scaled else 0,
        "stride_bsn": groups if block_scaled else 1, "stride_bsk": 1 if block_scaled else 0,
        "BLOCK_SCALED": block_scaled, "HAS_BIAS": False, **c.kwargs,
        "EVEN_K": k % (c.kwargs["BLOCK_K"] * split) == 0,
    }


def fp8_gemm_cases() -> Iterator[Case]:
    """Every config of every tier at the 8B qkv shape (per-channel scales, bf16 out); the
    tier's first config also per model, block-scaled and with fp16 output."""
    for tier, configs, m in FP8_TIERS:
        for i, c in enumerate(configs):
            variants = [(LLAMA_8B, "bf16", False)]
            if i == 0:
                variants += [(model, "bf16", False) for model in MODELS[1:]]
                variants += [(LLAMA_8B, "bf16", True), (LLAMA_8B, "fp16", False)]
            for model, out, block_scaled in variants:
                if block_scaled and fp8_matmul.SCALE_BLOCK % c.kwargs["BLOCK_K"]:
                    continue  # pruned by the launcher for block-scaled weights
                yield Case(
                    "fp8_gemm", fp8_matmul._fp8_gemm_kernel,
                    _gemm_config_label(c) + (" block-scaled" if block_scaled else ""), out,
                    model.name, _fp8_gemm_args(c, m, model.qkv, model.hidden, out, block_scaled),
                    num_warps=c.num_warps, num_stages=c.num_stages, fp8=True, tier=tier,
                    representative=i == 0 and model is LLAMA_8B and not block_scaled
                    and out == "bf16",
                    smem_estimate=fp8_matmul.config_smem_bytes(c),
                )
    for out in ("bf16", "fp16"):
        numel = 16 * LLAMA_8B.qkv
        yield Case("fp8_split_k_reduce", fp8_matmul._split_k_reduce_kernel, "split8 block1024",
                   out, LLAMA_8B.name,
                   {"ws_ptr": Ptr("fp32"), "c_ptr": Ptr(out), "numel": numel, "SPLIT_K": 8,
                    "BLOCK": 1024}, representative=out == "bf16")


def fp8_quant_cases() -> Iterator[Case]:
    for model in MODELS:
        for dtype in DTYPES:
            rep = model is LLAMA_8B and dtype == "bf16"
            k = model.hidden
            yield Case("fp8_quant_per_token", fp8_quant._per_token_quant_kernel, "block",
                       dtype, model.name,
                       {"x_ptr": Ptr(dtype), "q_ptr": Ptr("fp8e4nv"), "s_ptr": Ptr("fp32"),
                        "static_s_ptr": Ptr("fp32"), "K": k, "stride_xm": k, "stride_qm": k,
                        "STATIC": False, "BLOCK": min(triton.next_power_of_2(k), 2048)},
                       fp8=True, representative=rep)
            groups = triton.cdiv(k, 128)
            per_program = min(triton.next_power_of_2(groups), 8)
            yield Case("fp8_quant_per_group", fp8_quant._per_group_quant_kernel,
                       f"{per_program} groups", dtype, model.name,
                       {"x_ptr": Ptr(dtype), "q_ptr": Ptr("fp8e4nv"), "s_ptr": Ptr("fp32"),
                        "K": k, "num_groups": groups, "stride_xm": k, "stride_qm": k,
                        "stride_sm": groups, "GROUP": 128, "GROUPS_PER_PROGRAM": per_program},
                       fp8=True, representative=rep)


def _cache_strides(model: ModelShape, prefix: str) -> dict[str, int]:
    """Strides of a [blocks, KV_BLOCK, kv_heads, head_dim] cache."""
    row = model.kv_heads * model.head_dim
    return {f"stride_{prefix}b": KV_BLOCK * row, f"stride_{prefix}t": row,
            f"stride_{prefix}h": model.head_dim}


def decode_cases() -> Iterator[Case]:
    for model in MODELS:
        group = model.heads // model.kv_heads
        for dtype, torch_dtype in DTYPES.items():
            block_n, stages = gpu_tiles(torch.empty(0, dtype=torch_dtype))
            for splits in (1, 8):
                rep = model is LLAMA_8B and dtype == "bf16"
                args = {
                    "q_ptr": Ptr(dtype), "k_ptr": Ptr(dtype), "v_ptr": Ptr(dtype),
                    "table_ptr": Ptr("i32"), "lens_ptr": Ptr("i32"), "out_ptr": Ptr(dtype),
                    "mid_o_ptr": Ptr("fp32" if splits > 1 else dtype),
                    "mid_lse_ptr": Ptr("fp32" if splits > 1 else dtype),
                    "qk_scale": model.head_dim**-0.5 * LOG2E,
                    "stride_qb": model.qkv, "stride_qh": model.head_dim,
                    **_cache_strides(model, "k"), **_cache_strides(model, "v"),
                    "stride_tb": MAX_BLOCKS, "stride_ob": model.heads * model.head_dim,
                    "stride_oh": model.head_dim,
                    "GROUP": group, "HEAD_DIM": model.head_dim, "BLOCK_SIZE": KV_BLOCK,
                    "NUM_SPLITS": splits, "BLOCK_G": max(16, pow2(group)),
                    "BLOCK_D": pow2(model.head_dim), "BLOCK_N": block_n,
                    "PRECISION": dot_precision(torch_dtype), "UPCAST": False,
                }
                yield Case("decode_attention", decode_attention._decode_split_kernel,
                           f"n{block_n} splits{splits} w4 s{stages}", dtype, model.name, args,
                           num_warps=4, num_stages=stages, representative=rep)
            yield Case("decode_merge", decode_attention._decode_reduce_kernel, "splits8",
                       dtype, model.name,
                       {"mid_o_ptr": Ptr("fp32"), "mid_lse_ptr": Ptr("fp32"),
                        "out_ptr": Ptr(dtype), "stride_ob": model.heads * model.head_dim,
                        "stride_oh": model.head_dim, "HEAD_DIM": model.head_dim,
                        "NUM_SPLITS": 8, "BLOCK_S": 8, "BLOCK_D": pow2(model.head_dim)},
                       representative=model is LLAMA_8B and dtype == "bf16")


def prefill_cases() -> Iterator[Case]:
    for model in MODELS:
        group = model.heads // model.kv_heads
        group_pad = pow2(group)
        for dtype, torch_dtype in DTYPES.items():
            block_n = gpu_tiles(torch.empty(0, dtype=torch_dtype))[0]
            block_m = max(64, group_pad)  # a long prompt: the launcher's largest row tile
            args = {
                "q_ptr": Ptr(dtype), "k_ptr": Ptr(dtype), "v_ptr": Ptr(dtype),
                "out_ptr": Ptr(dtype), "table_ptr": Ptr("i32"), "lens_ptr": Ptr("i32"),
                "starts_ptr": Ptr("i32"), "qk_scale": model.head_dim**-0.5 * LOG2E,
                "stride_qt": model.qkv, "stride_qh": model.head_dim,
                **_cache_strides(model, "k"), **_cache_strides(model, "v"),
                "stride_tb": MAX_BLOCKS, "stride_ot": model.heads * model.head_dim,
                "stride_oh": model.head_dim,
                "GROUP": group, "GROUP_PAD": group_pad, "HEAD_DIM": model.head_dim,
                "BLOCK_SIZE": KV_BLOCK, "BLOCK_Q": block_m // group_pad, "BLOCK_M": block_m,
                "BLOCK_D": pow2(model.head_dim), "BLOCK_N": block_n,
                "PRECISION": dot_precision(torch_dtype), "UPCAST": False,
            }
            yield Case("prefill_attention", prefill_attention._prefill_kernel,
                       f"m{block_m} n{block_n} w4 s2", dtype, model.name, args, num_warps=4,
                       num_stages=2, representative=model is LLAMA_8B and dtype == "bf16")


def elementwise_cases() -> Iterator[Case]:
    for model in MODELS:
        h, d = model.hidden, model.head_dim
        for dtype in DTYPES:
            rep = model is LLAMA_8B and dtype == "bf16"
            block_h = pow2(h)
            for residual in (False, True):
                yield Case(
                    "fused_add_rms_norm" if residual else "rms_norm", norm._rms_norm_kernel,
                    f"block{block_h}", dtype, model.name,
                    {"x_ptr": Ptr(dtype), "res_ptr": Ptr(dtype), "w_ptr": Ptr(dtype),
                     "out_ptr": Ptr(dtype), "new_res_ptr": Ptr(dtype), "eps": 1e-5,
                     "stride_x": h, "stride_res": h, "stride_out": h, "stride_new_res": h,
                     "HIDDEN": h, "BLOCK_H": block_h, "ADD_RESIDUAL": residual},
                    num_warps=norm._warps(block_h), representative=rep)
            block = min(pow2(model.inter), 1024)
            yield Case("silu_and_mul", activation._silu_and_mul_kernel, f"block{block}", dtype,
                       model.name,
                       {"x_ptr": Ptr(dtype), "out_ptr": Ptr(dtype), "stride_x": 2 * model.inter,
                        "stride_out": model.inter, "INTER": model.inter, "BLOCK": block},
                       representative=rep)
            half = pow2(d // 2)
            block_heads = max(1, min(pow2(model.heads), 2048 // half))
            yield Case("rotary_embedding", rotary._rotary_kernel, f"heads{block_heads}", dtype,
                       model.name,
                       {"pos_ptr": Ptr("i64"), "x_ptr": Ptr(dtype), "inv_freq_ptr": Ptr("fp32"),
                        "out_ptr": Ptr(dtype), "stride_xt": model.qkv, "stride_xh": d,
                        "stride_xd": 1, "stride_ot": model.heads * d, "stride_oh": d,
                        "HEADS": model.heads, "HALF": d // 2, "BLOCK_H": block_heads,
                        "BLOCK_HALF": half}, representative=rep)
            yield Case("write_kv_cache", kv_cache._write_kv_kernel, "one token", dtype,
                       model.name,
                       {"k_ptr": Ptr(dtype), "v_ptr": Ptr(dtype), "k_cache_ptr": Ptr(dtype),
                        "v_cache_ptr": Ptr(dtype), "slot_ptr": Ptr("i64"),
                        "stride_kt": model.qkv, "stride_kh": d, "stride_kd": 1,
                        "stride_vt": model.qkv, "stride_vh": d, "stride_vd": 1,
                        **_cache_strides(model, "kc_"), **_cache_strides(model, "vc_"),
                        "HEADS": model.kv_heads, "HEAD_DIM": d, "BLOCK_SIZE": KV_BLOCK,
                        "BLOCK_H": pow2(model.kv_heads), "BLOCK_D": pow2(d)},
                       representative=rep)


def all_cases() -> list[Case]:
    return [*fp8_gemm_cases(), *fp8_quant_cases(), *decode_cases(), *prefill_cases(),
            *elementwise_cases()]
