"""Turning generated text into the message fields OpenAI clients read: `tool_calls` (or the
legacy `function_call`), `content`, `finish_reason`, whole or as streamed deltas.

A call that repeats an earlier one of the same message (same name, same arguments as JSON
values) ends the call list: it and anything after it are dropped. The engine's repeat guard
stops generating right there, so this only ever drops the one repeated call.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from serving.tools.definitions import ToolRequest
from serving.tools.formats import PartialCall, Scan, ToolCallFormat


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def finish_reason(tools: ToolRequest, engine_reason: str | None, has_calls: bool) -> str | None:
    """`length` wins; a named choice ends with `stop` (as OpenAI does); otherwise calls end
    with `tool_calls`, or `function_call` in the legacy dialect."""
    if engine_reason in (None, "length", "abort") or not has_calls:
        return engine_reason
    if tools.legacy:
        return "function_call"
    return "stop" if tools.choice == "named" else "tool_calls"


def _content(scan: Scan) -> str | None:
    return scan.content.strip() or None


@dataclass
class ParsedMessage:
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None


def call_key(call: PartialCall) -> tuple[str | None, str] | None:
    """What makes two calls the same; None while the arguments are not complete JSON."""
    try:
        args = json.loads(call.arguments)
    except ValueError:
        return None
    return call.name, json.dumps(args, sort_keys=True, separators=(",", ":"))


def distinct_calls(calls: list[PartialCall]) -> list[PartialCall]:
    """The calls up to (not including) the first that repeats an earlier one."""
    seen: set[tuple[str | None, str]] = set()
    for i, call in enumerate(calls):
        key = call_key(call)
        if key is not None and key in seen:
            return calls[:i]
        if key is not None:
            seen.add(key)
    return calls


def parse_message(fmt: ToolCallFormat, tools: ToolRequest, text: str) -> ParsedMessage:
    scan = fmt.scan(text, final=True)
    calls = distinct_calls([c for c in scan.calls if c.name is not None])
    if not calls:
        return ParsedMessage(_content(scan))
    if tools.legacy:
        first = calls[0]
        return ParsedMessage(_content(scan), function_call={"name": first.name,
                                                            "arguments": first.arguments})
    return ParsedMessage(_content(scan), tool_calls=[
        {"id": call_id(), "type": "function",
         "function": {"name": c.name, "arguments": c.arguments}} for c in calls])


@dataclass
class ToolStreamer:
    """One choice's streamed deltas: prose as `content`, calls as `tool_calls` fragments
    (PROTOCOL.md: id, type and name first with empty arguments, then argument pieces)."""

    fmt: ToolCallFormat
    tools: ToolRequest
    text: str = ""
    sent_content: int = 0
    sent_args: list[int] = field(default_factory=list)
    ended: bool = False  # a call repeated an earlier one: nothing more is sent

    @property
    def has_calls(self) -> bool:
        return bool(self.sent_args)

    def feed(self, new_text: str, final: bool) -> list[dict[str, Any]]:
        """Deltas for what `new_text` (appended to the text so far) decides."""
        self.text += new_text
        scan = self.fmt.scan(self.text, final)
        deltas: list[dict[str, Any]] = []
        content = scan.content.strip()  # grows monotonically (see scan's hold-back)
        if len(content) > self.sent_content:
            deltas.append({"content": content[self.sent_content:]})
            self.sent_content = len(content)
        calls = scan.calls[:1] if self.tools.legacy else scan.calls
        for index, call in enumerate(calls):
            if self.ended or call.name is None:
                break
            if index == len(self.sent_args) and not self._may_start(calls, index, final):
                break
            deltas.extend(self._call_deltas(index, call))
        return deltas

    def _may_start(self, calls: list[PartialCall], index: int, final: bool) -> bool:
        """Whether a new call may be sent. One that names an earlier call's function is held
        until its arguments close (it may turn out to repeat that call, and then it and
        everything after it is never sent)."""
        call, earlier = calls[index], calls[:index]  # the earlier ones are complete
        if all(c.name != call.name for c in earlier):
            return True
        if not (call.closed or final):
            return False
        if distinct_calls([*earlier, call])[-1] is not call:
            self.ended = True
            return False
        return True

    def _call_deltas(self, index: int, call: PartialCall) -> list[dict[str, Any]]:
        if call.name is None:
            return []
        out = []
        if index == len(self.sent_args):
            self.sent_args.append(0)
            out.append(self._fragment(index, {"name": call.name, "arguments": ""}, head=True))
        if len(call.arguments) > self.sent_args[index]:
            piece = call.arguments[self.sent_args[index]:]
            self.sent_args[index] = len(call.arguments)
            out.append(self._fragment(index, {"arguments": piece}, head=False))
        return out

    def _fragment(self, index: int, function: dict[str, Any], head: bool) -> dict[str, Any]:
        if self.tools.legacy:
            return {"function_call": function}
        frag: dict[str, Any] = {"index": index}
        if head:
            frag.update(id=call_id(), type="function")
        frag["function"] = function
        return {"tool_calls": [frag]}
