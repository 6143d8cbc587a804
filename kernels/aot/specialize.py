"""Build what `triton.compile` needs from a kernel's launch arguments, the way a launch does.

A real launch specializes on its arguments: pointers aligned to 16 bytes and integers
divisible by 16 get `tt.divisibility = 16`, integers equal to 1 become constants. Without
those hints the compiler cannot prove alignment: it emits no async copies and quietly drops
the software pipeline, so an ahead-of-time compile must pass them to see what a GPU runs.
torch allocations are 256-byte aligned, so every pointer here counts as aligned.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from triton.runtime.jit import JITFunction

Signature = dict[str, str]
Constexprs = dict[tuple[int, ...], Any]
Attrs = dict[tuple[int, ...], list[list[Any]]]
_DIVISIBLE = [["tt.divisibility", 16]]


@dataclass(frozen=True)
class Ptr:
    """A tensor argument: only its element type (Triton's name: bf16, fp8e4nv, ...) matters."""

    dtype: str


def _int_type(value: int) -> str:
    if -(2**31) <= value < 2**31:
        return "i32"
    return "i64" if -(2**63) <= value < 2**63 else "u64"


def _constexpr_flags(fn: JITFunction) -> list[bool]:
    params = getattr(fn, "params", None)
    if params is not None:
        return [p.is_constexpr for p in params]
    # An interpreted kernel (TRITON_INTERPRET=1) has no params: read its annotations.
    return ["constexpr" in str(p.annotation)
            for p in inspect.signature(fn.fn).parameters.values()]


def specialize(fn: JITFunction, args: dict[str, Any]) -> tuple[Signature, Constexprs, Attrs]:
    """(signature, constexprs, attrs) for `fn` launched with `args` (every parameter by name)."""
    names = fn.arg_names
    missing = set(names) - set(args)
    extra = set(args) - set(names)
    if missing or extra:
        raise ValueError(f"{fn.__name__}: missing {sorted(missing)}, unknown {sorted(extra)}")
    signature: Signature = {}
    constexprs: Constexprs = {}
    attrs: Attrs = {}
    for i, (name, is_constexpr) in enumerate(zip(names, _constexpr_flags(fn))):
        value = args[name]
        if is_constexpr or value is None or (type(value) is int and value == 1):
            signature[name] = "constexpr"
            constexprs[(i,)] = value
        elif isinstance(value, Ptr):
            signature[name] = f"*{value.dtype}"
            attrs[(i,)] = _DIVISIBLE
        elif isinstance(value, bool):
            signature[name] = "u1"
        elif isinstance(value, int):
            signature[name] = _int_type(value)
            attrs[(i,)] = _DIVISIBLE if value % 16 == 0 else []
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{fn.__name__}.{name}: cannot specialize {type(value).__name__}")
    return signature, constexprs, attrs
