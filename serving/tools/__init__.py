"""Tool / function calling for the chat endpoint: request validation (spec), the prompt
(prompt), model call formats with their grammars and parsers (formats), and the answers
(results). `plan_tools` ties them together for one request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine import GuidedDecoding
from serving.tools.definitions import ToolRequest, tool_request
from serving.tools.formats import (
    DEFAULT_MAX_TOOL_CALLS,
    HermesFormat,
    ToolCallFormat,
    format_for_template,
)
from serving.tools.prompt import prepare_messages, template_knows_tools
from serving.tools.results import ParsedMessage, ToolStreamer, finish_reason, parse_message


@dataclass
class ToolPlan:
    tools: ToolRequest
    fmt: ToolCallFormat
    max_calls: int = DEFAULT_MAX_TOOL_CALLS

    def structural_tag(self, answer: GuidedDecoding | None = None) -> dict[str, Any]:
        return self.fmt.structural_tag(self.tools, answer_format(answer), self.max_calls)

    def guided(self, answer: GuidedDecoding | None = None) -> GuidedDecoding:
        """The grammar of this request: calls (or, under `auto`, text; or the answer in
        the response_format when one is given), and the guard against repeated calls."""
        return GuidedDecoding(structural_tag=self.structural_tag(answer),
                              stop_on_repeat=self.fmt.trigger)


def answer_format(answer: GuidedDecoding | None) -> dict[str, Any] | None:
    """A response_format's grammar as a structural-tag element (None: free text). JSON
    inside structural tags allows at most one blank in a row, as tool arguments do."""
    if answer is None:
        return None
    schema = {"type": "object"} if answer.json_object else answer.json_schema
    if schema is None:
        raise ValueError("a response_format is a JSON object or a JSON schema")
    return {"type": "json_schema", "json_schema": schema, "max_whitespace_cnt": 1}


def plan_tools(tools: ToolRequest | None, template: str | None,
               max_calls: int = DEFAULT_MAX_TOOL_CALLS) -> ToolPlan | None:
    """The call format for this model: its template's own when it knows tools, else the
    Hermes tags our injected system prompt teaches."""
    if tools is None:
        return None
    fmt = format_for_template(template) if template_knows_tools(template) else HermesFormat()
    return ToolPlan(tools, fmt, max_calls)


__all__ = ["DEFAULT_MAX_TOOL_CALLS", "ParsedMessage", "ToolPlan", "ToolRequest", "ToolStreamer",
           "finish_reason", "parse_message", "plan_tools", "prepare_messages", "tool_request"]
