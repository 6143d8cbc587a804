"""Validate response bodies against OpenAI's published schemas (tests/openai_spec/).

`check(body, "/chat/completions", "post")` raises AssertionError listing every place where
`body` departs from the schema of that operation's success response (`media` picks the
streamed chunk schema: "text/event-stream"); `check_error(body)` does the same for the error
envelope.

Streamed completions have no schema of their own: OpenAI streams them in the shape of
`CreateCompletionResponse`, with `finish_reason` null until a choice ends (a choice that is
still running has no reason yet). `check_completion_chunk` applies that schema with only
this one relaxation.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SPEC = Path(__file__).resolve().parents[1] / "openai_spec" / "openapi-subset.json"


def _read_nullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema: the schema, or null."""
    if isinstance(node, list):
        return [_read_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _read_nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


CHUNK = "x-CompletionChunk"  # the derived schema of a streamed completion chunk


@functools.cache
def _spec() -> dict[str, Any]:
    spec = _read_nullable(json.loads(SPEC.read_text()))
    schemas = spec["components"]["schemas"]
    chunk = copy.deepcopy(schemas["CreateCompletionResponse"])
    reason = chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]
    chunk["properties"]["choices"]["items"]["properties"]["finish_reason"] = {
        "anyOf": [reason, {"type": "null"}]}
    schemas[CHUNK] = chunk
    return spec


@functools.cache
def _validator(ref: str) -> Draft202012Validator:
    # The whole document is the root, so that "#/components/schemas/..." resolves inside it.
    spec = _spec()
    return Draft202012Validator({"$ref": ref, "components": spec["components"]})


def response_ref(path: str, method: str, media: str = "application/json") -> str:
    responses = _spec()["paths"][path][method]["responses"]
    return responses["200"]["content"][media]["schema"]["$ref"]


def _validate(body: Any, ref: str) -> None:
    errors = sorted(_validator(ref).iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}"
                 for e in errors]
        raise AssertionError(f"not a valid {ref.rsplit('/', 1)[-1]}:\n" + "\n".join(lines))


def check(body: Any, path: str, method: str = "post", media: str = "application/json") -> None:
    _validate(body, response_ref(path, method, media))


def check_completion_chunk(body: Any) -> None:
    _validate(body, f"#/components/schemas/{CHUNK}")


def check_error(body: Any) -> None:
    _validate(body, "#/components/schemas/ErrorResponse")
