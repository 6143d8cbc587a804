"""GuidedDecoding: what a request's output must match, validated at construction.

Exactly one of:
- `json_object=True`: any JSON object (OpenAI's `response_format: json_object`);
- `json_schema`: a JSON schema (a dict) the output must satisfy; strict: no properties or
  items beyond the schema's;
- `structural_tag`: an xgrammar structural tag (a dict in xgrammar's JSON format, e.g.
  `{"type": "structural_tag", "format": {"type": "triggered_tags", ...}}`). The serving layer
  builds these for tool calls: free text until a trigger such as `<tool_call>`, then a call
  whose arguments satisfy the tool's schema.

Besides the grammar, `stop_on_repeat` (a marker string, e.g. `<tool_call>`) ends the output
as soon as the JSON object after an occurrence of the marker repeats one written before
(engine/guided/repeat_guard.py): a model cannot loop over one identical tool call.

Errors are ValueErrors whose message starts with "guided", the SamplingParams field name.
Whether a schema is one the grammar engine can compile is checked when the request reaches
the engine (EngineCore.check_guided), where the tokenizer is known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidRequest


@dataclass(frozen=True, eq=False)
class GuidedDecoding:
    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    structural_tag: dict[str, Any] | None = None
    stop_on_repeat: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.json_object, bool):
            raise InvalidRequest(
                f"guided.json_object must be a boolean, got {self.json_object!r}", "guided")
        for name in ("json_schema", "structural_tag"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise InvalidRequest(
                    f"guided.{name} must be a JSON object (a dict), got {value!r}", "guided")
        if self.stop_on_repeat is not None and (
                not isinstance(self.stop_on_repeat, str) or not self.stop_on_repeat):
            raise InvalidRequest("guided.stop_on_repeat must be a non-empty string, got "
                                 f"{self.stop_on_repeat!r}", "guided")
        chosen = [self.json_object, self.json_schema is not None, self.structural_tag is not None]
        if sum(chosen) != 1:
            raise InvalidRequest("guided must set exactly one of json_object, json_schema, "
                                 "structural_tag", "guided")
        try:  # the cache key; also proves the value is plain JSON
            key = json.dumps([self.kind, self.value], sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InvalidRequest(f"guided.{self.kind} is not valid JSON: {e}", "guided") from None
        object.__setattr__(self, "_key", key)

    @property
    def kind(self) -> str:
        if self.json_object:
            return "json_object"
        return "json_schema" if self.json_schema is not None else "structural_tag"

    @property
    def value(self) -> Any:
        return {"json_object": True, "json_schema": self.json_schema,
                "structural_tag": self.structural_tag}[self.kind]

    @property
    def key(self) -> str:
        """Canonical JSON of the grammar: equal grammars share one compiled grammar (the
        repeat guard is not part of it)."""
        return self._key  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, GuidedDecoding) and other.key == self.key
                and other.stop_on_repeat == self.stop_on_repeat)

    def __hash__(self) -> int:
        return hash((self.key, self.stop_on_repeat))
