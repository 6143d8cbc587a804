"""The CPU namespace computes what the references compute, with or without a step plan, and
a plan follows the step it was built from."""

from __future__ import annotations

import pytest
import torch

from engine.model.layers import rope_inv_freq
from engine.worker.cpu_ops import ROTATION_MAX_TOKENS, CpuOps
from kernels import reference_ops
from tests.kernels.paged import assert_close, make_paged_cache, naive_attention


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
        # A second call of the same step (the next layer): the same result.
        torch.testing.assert_close(ops.rotary_embedding(positions, x, inv_freq), expected)
    positions = torch.tensor([5, 6, 7])
    first = ops.rotary_embedding(positions, x, inv_freq)
    positions[0] = 9  # rewritten in place: a new step's values
    torch.testing.assert_close(
        ops.rotary_embedding(positions, x, inv_freq),
        reference_ops.rotary_embedding(positions, x, inv_freq),
    )
    assert not torch.allclose(first[0], ops.rotary_embedding(positions, x, inv_freq)[0])


def _plan(ops: CpuOps, positions: torch.Tensor, inv_freq: torch.Tensor, slots: torch.Tensor,
          tables: torch.Tensor, lens: torch.Tensor, decode: bool = True):
    return ops.plan_step(positions, inv_freq, torch.float32, slots, tables, lens, 16, decode)


@pytest.mark.parametrize("tokens", [1, 5, ROTATION_MAX_TOKENS + 3])
def test_planned_rotary_matches_reference(tokens: int) -> None:
    """One bmm by rotation matrices (small steps) or the tables (larger): the reference's
    rotation either way."""
    ops = CpuOps()
    inv_freq = rope_inv_freq(64, 10000.0, None)
    positions = torch.randint(0, 4000, (tokens,))
    x = torch.randn(tokens, 12, 64)
    plan = _plan(ops, positions, inv_freq, torch.arange(tokens), torch.zeros(1, 1), torch.ones(1),
                 decode=False)
    assert (plan.rotation is not None) == (tokens <= ROTATION_MAX_TOKENS)
    torch.testing.assert_close(ops.rotary_embedding(positions, x, inv_freq, plan=plan),
                               reference_ops.rotary_embedding(positions, x, inv_freq))
    # A non-contiguous x (q and k heads sliced out of qkv, as the model passes them).
    qkv = torch.randn(tokens, 15, 64)
    torch.testing.assert_close(ops.rotary_embedding(positions, qkv[:, :12], inv_freq, plan=plan),
                               reference_ops.rotary_embedding(positions, qkv[:, :12], inv_freq))


def test_plan_of_a_step_follows_its_indices() -> None:
    """A plan is built from the step's own tensors: the next step's plan has its positions,
    padding and decode grouping, not the last step's."""
    ops = CpuOps()
    inv_freq = rope_inv_freq(32, 10000.0, None)
    x = torch.randn(2, 4, 32)
    tables = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
    first = _plan(ops, torch.tensor([5, 20]), inv_freq, torch.tensor([5, 52]), tables,
                  torch.tensor([20, 21], dtype=torch.int32))
    second = _plan(ops, torch.tensor([6, 21]), inv_freq, torch.tensor([-1, 53]), tables,
                   torch.tensor([0, 22], dtype=torch.int32))
    assert not first.padded and second.padded
    assert [len(g.tables) for g in first.decode.groups] == [2]
    assert second.decode.groups[0].rows.tolist() == [1]  # the padding row attends nothing
    for plan, pos in ((first, [5, 20]), (second, [6, 21])):
        positions = torch.tensor(pos)
        torch.testing.assert_close(ops.rotary_embedding(positions, x, inv_freq, plan=plan),
                                   reference_ops.rotary_embedding(positions, x, inv_freq))


@pytest.mark.parametrize("slots", [[3, 17, 40], [3, -1, 40]])
def test_planned_kv_write_matches_reference(slots: list[int]) -> None:
    ops = CpuOps()
    slot_mapping = torch.tensor(slots)
    plan = _plan(ops, torch.arange(3), rope_inv_freq(16, 10000.0, None), slot_mapping,
                 torch.zeros(3, 1, dtype=torch.int32), torch.ones(3, dtype=torch.int32))
    kv = torch.randn(3, 6, 16)[:, :4]  # k and v sliced out of one tensor, as in the model
    k, v = kv[:, :2], kv[:, 2:]
    got = [torch.zeros(4, 16, 2, 16) for _ in range(2)]
    want = [c.clone() for c in got]
    ops.write_kv_cache(k, v, *got, slot_mapping, plan)
    reference_ops.write_kv_cache(k, v, *want, slot_mapping)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_planned_decode_attention_matches_oracle() -> None:
    lens = [40, 3, 0, 100]
    cache = make_paged_cache(lens, 3, 32, 16, torch.float32)
    ops = CpuOps()
    q = torch.randn(len(lens), 9, 32)
    plan = _plan(ops, torch.tensor(lens), rope_inv_freq(32, 10000.0, None),
                 torch.arange(len(lens)), cache.block_tables, cache.context_lens)
    got = ops.paged_decode_attention(q, cache.k_cache, cache.v_cache, cache.block_tables,
                                     cache.context_lens, 0.2, plan=plan)
    assert_close(got, naive_attention(q, cache, [1] * len(lens), 0.2).float())
    assert torch.equal(got[2], torch.zeros_like(got[2]))
