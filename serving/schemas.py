"""Checks of the JSON schemas clients send (response_format json_schema, tool parameters),
before anything recurses over them: depth, references, and the schema's own validity.

A schema deeper than MAX_SCHEMA_DEPTH levels of JSON nesting is refused (the jsonschema
check and the grammar compiler recurse per level; 64 is far beyond real tool schemas). A
`$ref` must point inside the schema ("#..."): nothing is ever fetched, and a reference to a
URL, a file or another document is a 400 rather than a silent guess.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, SchemaError

from serving.errors import bad_request

MAX_SCHEMA_DEPTH = 64
_REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")
_DATA_KEYS = {"enum", "const", "default", "examples"}  # values here are data, not schemas
# Keywords whose value maps names to schemas: there, a key is a name (a property may be
# called "enum" or "$ref"), not a keyword.
_NAME_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}


def check_json_schema(schema: dict[str, Any], param: str, what: str) -> None:
    """400 (naming `param`) unless `schema` is a valid, bounded, self-contained JSON schema;
    `what` names it in the message ("JSON schema", "JSON schema for function 'f'")."""
    _check_shape(schema, param, what)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise bad_request(f"Invalid {what}: {e.message}", param) from None
    except RecursionError:  # guarded by the depth bound; kept as a 400 should it ever hit
        raise _too_deep(param, what) from None


def _too_deep(param: str, what: str) -> Exception:
    return bad_request(f"The {what} is nested too deeply: at most {MAX_SCHEMA_DEPTH} levels "
                       "of JSON objects and arrays are allowed", param, "schema_too_deep")


def _check_shape(schema: Any, param: str, what: str) -> None:
    """Depth and references, walked without recursion (the input may be adversarial)."""
    # (node, depth, kind): kind is "schema", "names" (a map of names to schemas) or "data"
    stack: list[tuple[Any, int, str]] = [(schema, 1, "schema")]
    while stack:
        node, depth, kind = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise _too_deep(param, what)
        if isinstance(node, list):
            stack.extend((v, depth + 1, kind) for v in node if isinstance(v, (dict, list)))
            continue
        for key, value in node.items():
            if kind == "schema" and key in _REF_KEYS and isinstance(value, str) \
                    and not value.startswith("#"):
                raise bad_request(
                    f"The {what} refers to {value!r} with {key}: only references inside the "
                    "schema (starting with '#') are allowed; nothing is fetched",
                    param, "remote_ref")
            if isinstance(value, (dict, list)):
                stack.append((value, depth + 1, _child_kind(kind, key)))


def _child_kind(kind: str, key: str) -> str:
    if kind == "data" or (kind == "schema" and key in _DATA_KEYS):
        return "data"
    if kind == "schema" and key in _NAME_MAPS:
        return "names"
    return "schema"  # a keyword's schema(s), or a named schema in a map
