"""Schema rewrites that work around grammar-engine gaps, so valid-by-construction holds.

xgrammar 0.2.8 turns a length-limited string (`minLength` / `maxLength`) into a character
class that lets raw control characters (U+0000-U+001F) through, which no JSON parser accepts
inside a string. Such a string is rewritten into the equivalent `pattern` (any character but
`"`, `\\` and the controls, repeated min..max times), which xgrammar compiles correctly. The
rewrite only narrows what may be generated (no escape sequences in those strings).
"""

from __future__ import annotations

from typing import Any

# Keys whose values are data, not sub-schemas: never rewrite inside them.
_DATA_KEYS = {"enum", "const", "default", "examples"}


def _bounded_string_pattern(schema: dict[str, Any]) -> str:
    lo = int(schema.get("minLength", 0))
    hi = schema.get("maxLength")
    reps = f"{{{lo},{int(hi)}}}" if hi is not None else f"{{{lo},}}"
    return '^[^"\\\\\\x00-\\x1f]' + reps + "$"


def _needs_rewrite(schema: dict[str, Any]) -> bool:
    return (schema.get("type") == "string"
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
