"""Decode attention on the GPU: our split-KV paged kernel against SDPA and the HBM ceiling.

    python -m benchmarks.kernel_attention            # full sweep, prints a table, saves JSON
    python -m benchmarks.kernel_attention --quick    # one small point, to check it runs

Llama-3.1-8B attention shape: 32 query heads over 8 KV heads, head_dim 128, bf16, KV
block 16. For each batch x context point, the median time (triton.testing.do_bench) of
- ours: kernels.triton_ops.paged_decode_attention over a cache whose blocks are shuffled;
- SDPA: F.scaled_dot_product_attention on contiguous K/V [batch, kv_heads, ctx, 128] with
  the 4 query heads of each KV head as its 4 query rows (the same math, no mask needed),
  so the library reads K/V once per group as we do.
Bytes = K and V actually read + q + out; GB/s = bytes / time; "of HBM" divides by the
bandwidth measured here with a large device-to-device copy.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

Q_HEADS, KV_HEADS, HEAD_DIM, BLOCK = 32, 8, 128, 16
BATCHES = (1, 4, 16, 64)
CONTEXTS = (1024, 2048, 4096, 8192)


def _paged_case(batch: int, ctx: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    blocks_per_seq = -(-ctx // BLOCK)
    num_blocks = batch * blocks_per_seq
    shape = (num_blocks, BLOCK, KV_HEADS, HEAD_DIM)
    k_cache = torch.randn(shape, dtype=dtype, device="cuda")
    v_cache = torch.randn(shape, dtype=dtype, device="cuda")
    tables = torch.randperm(num_blocks, device="cuda").view(batch, blocks_per_seq).int()

    # The same K/V, contiguous per sequence, for SDPA: [batch, kv_heads, ctx, head_dim].
    def contiguous(cache: torch.Tensor) -> torch.Tensor:
        per_seq = cache[tables.long()].flatten(1, 2)[:, :ctx]
        return per_seq.transpose(1, 2).contiguous()

    return {
        "q": torch.randn(batch, Q_HEADS, HEAD_DIM, dtype=dtype, device="cuda"),
        "k_cache": k_cache, "v_cache": v_cache, "tables": tables,
        "lens": torch.full((batch,), ctx, dtype=torch.int32, device="cuda"),
        "k": contiguous(k_cache), "v": contiguous(v_cache),
    }


def _point(batch: int, ctx: int, bandwidth_gbs: float, dtype: torch.dtype) -> dict:
    import triton.testing

    from kernels import triton_ops

    case = _paged_case(batch, ctx, dtype)
    q, scale = case["q"], HEAD_DIM**-0.5
    out = torch.empty_like(q)
    group = Q_HEADS // KV_HEADS
    q_grouped = q.view(batch, KV_HEADS, group, HEAD_DIM)  # head h reads kv head h // group

    def ours() -> torch.Tensor:
        return triton_ops.paged_decode_attention(
            q, case["k_cache"], case["v_cache"], case["tables"], case["lens"], scale, out=out
        )

    def sdpa() -> torch.Tensor:
        return F.scaled_dot_product_attention(q_grouped, case["k"], case["v"], scale=scale)

    max_err = (ours().float() - sdpa().reshape_as(q).float()).abs().max().item()
    t_ours = triton.testing.do_bench(ours, return_mode="median") * 1e-3
    t_sdpa = triton.testing.do_bench(sdpa, return_mode="median") * 1e-3
    elem = q.element_size()
    read = 2 * batch * ctx * KV_HEADS * HEAD_DIM * elem + 2 * q.numel() * elem
    ours_gbs, sdpa_gbs = read / t_ours / 1e9, read / t_sdpa / 1e9
    return {
        "batch": batch, "context": ctx, "bytes": read,
        "ours_us": round(t_ours * 1e6, 2), "sdpa_us": round(t_sdpa * 1e6, 2),
        "ours_gbs": round(ours_gbs, 1), "sdpa_gbs": round(sdpa_gbs, 1),
        "ours_of_hbm": round(ours_gbs / bandwidth_gbs, 3),
        "sdpa_of_hbm": round(sdpa_gbs / bandwidth_gbs, 3),
        "speedup_vs_sdpa": round(t_sdpa / t_ours, 3), "max_abs_diff_vs_sdpa": max_err,
    }


def bench_attention(
    bandwidth_gbs: float,
    batches: tuple[int, ...] = BATCHES,
    contexts: tuple[int, ...] = CONTEXTS,
    dtype: torch.dtype = torch.bfloat16,
) -> list[dict]:
    """One row per batch x context point (see the module docstring). Needs CUDA."""
    if not torch.cuda.is_available():
        raise RuntimeError("bench_attention needs a CUDA GPU (the kernels are timed on device)")
    rows = []
    for batch in batches:
        for ctx in contexts:
            rows.append(_point(batch, ctx, bandwidth_gbs, dtype))
            torch.cuda.empty_cache()
    return rows


def print_attention_table(rows: list[dict], bandwidth_gbs: float) -> None:
    print(f"measured copy bandwidth: {bandwidth_gbs:.0f} GB/s")
    print(f"{'batch':>5} {'ctx':>5} {'ours us':>9} {'GB/s':>7} {'of HBM':>7} "
          f"{'sdpa us':>9} {'GB/s':>7} {'of HBM':>7} {'x sdpa':>7}")
    for r in rows:
        print(f"{r['batch']:>5} {r['context']:>5} {r['ours_us']:>9.1f} {r['ours_gbs']:>7.0f} "
              f"{r['ours_of_hbm']:>7.1%} {r['sdpa_us']:>9.1f} {r['sdpa_gbs']:>7.0f} "
              f"{r['sdpa_of_hbm']:>7.1%} {r['speedup_vs_sdpa']:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one small point (batch 4, ctx 1k)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks.kernel_attention times GPU kernels: no CUDA device is visible here.")
    from benchmarks.common import memory_bandwidth_gbps, save

    bandwidth = memory_bandwidth_gbps("cuda")
    if args.quick:
        rows = bench_attention(bandwidth, batches=(4,), contexts=(1024,))
    else:
        rows = bench_attention(bandwidth)
    print_attention_table(rows, bandwidth)
    shape = {"q_heads": Q_HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "block_size": BLOCK,
             "dtype": "bfloat16"}
    path = save("kernel_attention", {"bandwidth_gbs": round(bandwidth, 1), "shape": shape,
                                     "rows": rows})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
