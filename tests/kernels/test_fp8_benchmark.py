"""benchmarks/kernels.py's FP8 section runs end to end on one tiny shape (interpreter on the
CPU), so the script a GPU run depends on does not rot unnoticed."""

from __future__ import annotations

from benchmarks import kernels as bench


def test_bench_fp8_rows_have_the_ceiling_fractions(capsys, monkeypatch) -> None:
    monkeypatch.setattr(bench, "COMPUTE_BOUND_M", 65)  # a large M is slow in the interpreter
    bandwidth = 1e9
    rows = bench.bench_fp8(bandwidth, {"tiny": (40, 72)}, (1, 65))
    assert [(r["shape"], r["M"], r["N"], r["K"]) for r in rows] == [
        ("tiny", 1, 40, 72), ("tiny", 65, 40, 72)]
    small, large = rows
    for row in rows:
        assert row["ours_ms"] > 0 and row["bf16_linear_ms"] > 0 and row["ours_with_quant_ms"] > 0
    nbytes = 40 * 72 + 72 + 2 * 40 + 4 * 41  # weight + activations + output + scales
    expected = 100 * nbytes / (small["ours_ms"] / 1000) / bandwidth
    assert abs(small["ours_pct_hbm"] - expected) <= 0.06 + 1e-3 * expected  # rounding only
    assert "ours_pct_hbm" not in large
    if "scaled_mm_ms" in large:  # this torch build may lack _scaled_mm on the CPU
        ratio = 100 * large["scaled_mm_ms"] / large["ours_ms"]
        assert abs(large["ours_pct_scaled_mm"] - ratio) <= 0.06 + 1e-3 * ratio
    bench.print_table(rows)
    out = capsys.readouterr().out
    assert "== fp8_gemm ==" in out and "ours_pct_hbm" in out
