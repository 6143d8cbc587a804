"""Write openapi-subset.json: the part of OpenAI's OpenAPI description this server answers with.

    python tests/openai_spec/extract.py PATH/TO/openapi.yml

Keeps, for each operation below, its success responses (media type -> schema reference) and
every schema they reach through $ref, with descriptions and examples dropped (they are prose,
not shape). Nothing else is changed: the test helper (tests/serving/openai_schema.py) reads
OpenAPI's `nullable` itself. Needs PyYAML (a dependency of the dev tools).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

# (path, method) of the operations the server implements with OpenAI's shapes.
OPERATIONS = [("/chat/completions", "post"), ("/completions", "post"), ("/embeddings", "post"),
              ("/models", "get"), ("/models/{model}", "get"), ("/files", "get"),
              ("/files", "post"), ("/files/{file_id}", "get"), ("/files/{file_id}", "delete")]
EXTRA_SCHEMAS = ["ErrorResponse"]  # every error body
PROSE = {"description", "example", "examples", "x-oaiMeta", "title", "summary"}


def strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k not in PROSE}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def main(source: Path, out: Path) -> None:
    spec = yaml.safe_load(source.read_text())
    schemas = spec["components"]["schemas"]
    paths: dict[str, Any] = {}
    for path, method in OPERATIONS:
        op = spec["paths"][path][method]
        ok = {code: {"content": {media: {"schema": body["schema"]}
                                 for media, body in resp.get("content", {}).items()}}
              for code, resp in op["responses"].items() if code.startswith("2")}
        paths.setdefault(path, {})[method] = {"operationId": op["operationId"], "responses": ok}
    todo = [r for r in refs(paths)] + [f"#/components/schemas/{n}" for n in EXTRA_SCHEMAS]
    kept: dict[str, Any] = {}
    while todo:
        ref = todo.pop()
        name = ref.removeprefix("#/components/schemas/")
        if name in kept:
            continue
        kept[name] = strip(schemas[name])
        todo.extend(refs(kept[name]))
    info = spec["info"]
    subset = {"openapi": spec["openapi"],
              "info": {"title": info["title"], "version": info["version"],
                       "license": info["license"]},
              "paths": paths, "components": {"schemas": dict(sorted(kept.items()))}}
    out.write_text(json.dumps(subset, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).with_name("openapi-subset.json"))
