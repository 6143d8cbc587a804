"""Request bodies as JSON: parsed, then checked for what JSON allows but the server cannot
take, before any code walks the value.

- Nesting deeper than MAX_JSON_DEPTH (objects and arrays) is a 400 `json_too_deep`: deeper
  values overflow the recursion of the parser, of validation and of templates (a 500 once).
- A string (or object key) holding a lone UTF-16 surrogate ("\\ud800" is valid JSON but no
  Unicode text) is a 400 `invalid_unicode` naming the field: tokenizers and encoders refuse
  such strings.
- NaN and Infinity, which Python's parser accepts, are not JSON: 400.
"""

from __future__ import annotations

import json
from typing import Any

from serving.errors import APIError, bad_request

MAX_JSON_DEPTH = 128


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _too_deep() -> APIError:
    return bad_request(f"The JSON body is nested too deeply: at most {MAX_JSON_DEPTH} levels "
                       "of objects and arrays are allowed", code="json_too_deep")


def parse_json_body(raw: bytes | str) -> dict[str, Any]:
    """The body as a dict; APIError 400 for anything else (see the module's docstring)."""
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad_request(f"We could not parse the JSON body of your request: {e}") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object")
    check_json_value(data)
    return data


def _is_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # only lone surrogates cannot be encoded
        return False
    return True


def _param(path: tuple[str | int, ...]) -> str | None:
    out = ""
    for item in path:
        out += f"[{item}]" if isinstance(item, int) else (f".{item}" if out else item)
    return out or None


def _bad_text(path: tuple[str | int, ...]) -> APIError:
    where = _param(path)
    return bad_request(f"{f'`{where}`' if where else 'The body'} holds a lone UTF-16 "
                       "surrogate (such as \\ud800), which is not valid Unicode text",
                       where, "invalid_unicode")


def check_json_value(value: Any) -> None:
    """Depth and text checks of a parsed body, without recursion (it may be adversarial).
    Paths are built only for containers, so a long list of numbers costs one type check
    per item."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        if isinstance(node, dict):
            for key, item in node.items():
                if not _is_unicode(key):
                    raise _bad_text(path)
                if isinstance(item, str):
                    if not _is_unicode(item):
                        raise _bad_text((*path, key))
                elif isinstance(item, (dict, list)):
                    stack.append((item, depth + 1, (*path, key)))
        else:
            for i, item in enumerate(node):
                if isinstance(item, str):
                    if not _is_unicode(item):
                        raise _bad_text((*path, i))
                elif isinstance(item, (dict, list)):
                    stack.append((item, depth + 1, (*path, i)))
