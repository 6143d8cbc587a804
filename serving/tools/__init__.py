"""Tool / function calling for the chat endpoint: request validation (spec), the prompt
(prompt), model call formats with their grammars and parsers (formats), and the answers
(results). `plan_tools` ties them together for one request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.tools.definitions import ToolRequest, tool_request
from serving.tools.formats import HermesFormat, ToolCallFormat, format_for_template
from serving.tools.prompt import prepare_messages, template_knows_tools
from serving.tools.results import ParsedMessage, ToolStreamer, finish_reason, parse_message


@dataclass
class ToolPlan:
    tools: ToolRequest
    fmt: ToolCallFormat

    def structural_tag(self) -> dict[str, Any]:
        return self.fmt.structural_tag(self.tools)


def plan_tools(tools: ToolRequest | None, template: str | None) -> ToolPlan | None:
    """The call format for this model: its template's own when it knows tools, else the
    Hermes tags our injected system prompt teaches."""
    if tools is None:
        return None
    fmt = format_for_template(template) if template_knows_tools(template) else HermesFormat()
    return ToolPlan(tools, fmt)


__all__ = ["ParsedMessage", "ToolPlan", "ToolRequest", "ToolStreamer", "finish_reason",
           "parse_message", "plan_tools", "prepare_messages", "tool_request"]
