"""The CPU namespace computes what the references compute, and its per-step rotary table
follows the positions it is given."""

from __future__ import annotations

import pytest
import torch

from engine.model.layers import rope_inv_freq
from engine.worker.cpu_ops import CpuOps
from kernels import reference_ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norms_match_reference(dtype: torch.dtype) -> None:
    x, r = torch.randn(5, 64).to(dtype), torch.randn(5, 64).to(dtype)
    w = torch.rand(64).to(dtype) + 0.5
    ops = CpuOps()
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-6), reference_ops.rms_norm(x, w, 1e-6), **tol)
    got, got_res = ops.fused_add_rms_norm(x, r, w, 1e-6)
    exp, exp_res = reference_ops.fused_add_rms_norm(x, r, w, 1e-6)
    torch.testing.assert_close(got, exp, **tol)
    assert torch.equal(got_res, exp_res)
    out = torch.empty_like(x)
    assert ops.rms_norm(x, w, 1e-6, out=out).data_ptr() == out.data_ptr()


def test_rotary_matches_reference_and_rebuilds_for_new_positions() -> None:
    ops = CpuOps()
    inv_freq = rope_inv_freq(32, 10000.0, None)
    x = torch.randn(3, 4, 32)
    for positions in (torch.tensor([0, 7, 100]), torch.tensor([1, 8, 101])):
        expected = reference_ops.rotary_embedding(positions, x, inv_freq)
        torch.testing.assert_close(ops.rotary_embedding(positions, x, inv_freq), expected)
        # A second call of the same step (the next layer) reuses the table, same result.
        torch.testing.assert_close(ops.rotary_embedding(positions, x, inv_freq), expected)
    positions = torch.tensor([5, 6, 7])
    first = ops.rotary_embedding(positions, x, inv_freq)
    positions[0] = 9  # rewritten in place: a new step's values
    torch.testing.assert_close(
        ops.rotary_embedding(positions, x, inv_freq),
        reference_ops.rotary_embedding(positions, x, inv_freq),
    )
    assert not torch.allclose(first[0], ops.rotary_embedding(positions, x, inv_freq)[0])
