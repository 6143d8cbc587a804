"""Schema rewrites that work around grammar-engine gaps, so valid-by-construction holds.

xgrammar 0.2.8 turns a length-limited string (`minLength` / `maxLength`) into a character
class that lets raw control characters (U+0000-U+001F) through, which no JSON parser accepts
inside a string, and its bounded repetition also admits broken UTF-8 (a lone lead byte then
counts as one U+FFFD character each, overrunning maxLength). Such a string is rewritten into
a `pattern` of printable ASCII other than `"` and `\\`, repeated min..max times, which
xgrammar compiles exactly. The rewrite only narrows what may be generated: no escapes and no
non-ASCII characters in length-bounded strings.
"""

from __future__ import annotations

from typing import Any

# Keys whose values are data, not sub-schemas: never rewrite inside them.
_DATA_KEYS = {"enum", "const", "default", "examples"}


def _bounded_string_pattern(schema: dict[str, Any]) -> str:
    lo = int(schema.get("minLength", 0))
    hi = schema.get("maxLength")
    reps = f"{{{lo},{int(hi)}}}" if hi is not None else f"{{{lo},}}"
    return "^[ !#-\\[\\]-~]" + reps + "$"


def _needs_rewrite(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    is_string = kind == "string" or (isinstance(kind, list) and "string" in kind)
    return (is_string
            and ("minLength" in schema or "maxLength" in schema)
            and not any(k in schema for k in ("pattern", "format", "enum", "const")))


def fix_schema(node: Any) -> Any:
    """A copy of `node` (a JSON schema, or a structural tag holding schemas), rewritten."""
    if isinstance(node, list):
        return [fix_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in _DATA_KEYS else fix_schema(v)) for k, v in node.items()}
    if _needs_rewrite(out):
        out["pattern"] = _bounded_string_pattern(out)
        out.pop("minLength", None)
        out.pop("maxLength", None)
    return out
