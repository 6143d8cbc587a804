"""Both kernel backends implement exactly the KernelOps Protocol, signature for signature."""

from __future__ import annotations

import inspect
import typing

import pytest

from kernels import reference_ops, triton_ops
from kernels.ops import KernelOps

MEMBERS = sorted(
    name for name, value in vars(KernelOps).items()
    if callable(value) and not name.startswith("_")
)


def _contract(name: str) -> tuple[list[tuple[str, object, object]], dict[str, object]]:
    """(parameters as (name, kind, default) without self, resolved type hints)."""
    fn = getattr(KernelOps, name)
    params = list(inspect.signature(fn).parameters.values())[1:]
    hints = typing.get_type_hints(fn)
    return [(p.name, p.kind, p.default) for p in params], hints


def test_protocol_declares_the_nine_ops_and_the_step_plan():
    assert MEMBERS == sorted([
        "rms_norm", "fused_add_rms_norm", "silu_and_mul", "rotary_embedding", "write_kv_cache",
        "paged_attention", "paged_decode_attention", "quantize_fp8_weight", "fp8_linear",
        "plan_step",
    ])


@pytest.mark.parametrize("impl", [reference_ops, triton_ops], ids=["reference", "triton"])
def test_implementation_has_exactly_the_protocol_members(impl):
    public = sorted(n for n in dir(impl) if not n.startswith("_"))
    assert public == MEMBERS


@pytest.mark.parametrize("name", MEMBERS)
@pytest.mark.parametrize("impl", [reference_ops, triton_ops], ids=["reference", "triton"])
def test_signature_matches_protocol(impl, name):
    params, hints = _contract(name)
    fn = getattr(impl, name)
    got = [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
    assert got == params
    assert typing.get_type_hints(fn) == hints
