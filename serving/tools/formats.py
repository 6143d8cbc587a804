"""Model-specific tool-call formats: the grammar that forces a call, and the parser that
reads calls back out of the generated text (whole or as it streams).

- HermesFormat (ChatML / Hermes / Qwen / SmolLM2 with our injected prompt):
  `<tool_call>\\n{"name": "NAME", "arguments": {...}}\\n</tool_call>`, one block per call.
- Llama3JsonFormat (Llama 3.1/3.2 JSON tool calling):
  `{"name": "NAME", "parameters": {...}}`, several separated by "; ".

The grammar fixes the exact header (`{"name": "NAME", "arguments": `), so the parser can
take `arguments` verbatim: the streamed pieces and the non-streamed string are the same text.
It also bounds the calls: at most `max_calls` in one message, one after another with only the
format's separator between them, and nothing after the last (the engine's repeat guard ends
the message when a call repeats an earlier one; see engine/guided/repeat_guard.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from serving.tools.definitions import Function, ToolRequest

_DECODER = json.JSONDecoder()


DEFAULT_MAX_TOOL_CALLS = 16  # per assistant message; the server's --max-tool-calls


@dataclass
class PartialCall:
    name: str | None  # None until the header is complete
    arguments: str  # the raw JSON text so far (trailing undecided characters held back)
    complete: bool
    closed: bool = False  # the arguments' JSON object is complete (the wrapper may not be)


@dataclass
class Scan:
    """What a text says so far: the prose outside calls, and the calls."""

    content: str
    calls: list[PartialCall] = field(default_factory=list)


def _held_prefix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


class ToolCallFormat:
    name: str
    trigger: str  # where a call starts in free text
    args_key: str
    end: str  # after the call's JSON object ("" when the object's close ends it)
    separator: str  # between calls when only calls are allowed

    def _begin(self, fn: Function) -> str:
        raise NotImplementedError

    # ---- grammar -------------------------------------------------------------------------

    def _tag(self, fn: Function) -> dict[str, Any]:
        return {"type": "tag", "begin": self._begin(fn), "end": "}" + self.end,
                # At most one blank in a row: a weak model must not wander off into spaces.
                "content": {"type": "json_schema", "json_schema": fn.parameters,
                            "max_whitespace_cnt": 1}}

    def structural_tag(self, tools: ToolRequest, answer: dict[str, Any] | None = None,
                       max_calls: int = DEFAULT_MAX_TOOL_CALLS) -> dict[str, Any]:
        """xgrammar structural tag.

        - `auto`: free text, or free text then calls; with `answer` (the response_format's
          format element) instead: either an answer in that format or calls, nothing else;
        - `required`: calls only; a named function: exactly that one call (as OpenAI does).
        Calls come one after another, separated by `separator`, at most `max_calls` of them
        (one unless parallel), and end the message.
        """
        tags = [self._tag(f) for f in tools.allowed]
        if tools.choice == "named":
            return {"type": "structural_tag", "format": tags[0]}
        one_call = tags[0] if len(tags) == 1 else {"type": "or", "elements": tags}
        more = max_calls - 1 if tools.parallel else 0
        rest = [{"type": "repeat", "min": 0, "max": more, "content": {
            "type": "sequence",
            "elements": [{"type": "const_string", "value": self.separator}, one_call]}}
            ] if more > 0 else []
        if tools.choice == "auto" and answer is None:
            first = {"type": "triggered_tags", "triggers": [self.trigger], "tags": tags,
                     "at_least_one": False, "stop_after_first": True}
            return {"type": "structural_tag", "format": _sequence([first, *rest])}
        calls = _sequence([one_call, *rest])
        if tools.choice == "auto":
            calls = {"type": "or", "elements": [answer, calls]}
        return {"type": "structural_tag", "format": calls}

    # ---- parsing -------------------------------------------------------------------------

    _HEADER: re.Pattern[str]

    def scan(self, text: str, final: bool) -> Scan:
        """Split `text` into prose and calls. Unless `final`, anything that may still turn
        out differently (a half-written trigger, a trailing '}' or end marker) is held back,
        so every later scan extends this one."""
        out = Scan("")
        pos = 0
        while True:
            start = text.find(self.trigger, pos)
            if start < 0:
                rest = text[pos:]
                hold = 0 if final else _held_prefix(rest, self.trigger)
                out.content += rest[: len(rest) - hold]
                return out
            out.content += text[pos:start]
            call, pos = self._scan_call(text, start, final)
            if call is None:
                out.content += text[start:]
                return out
            out.calls.append(call)
            if not call.complete:
                return out

    def _scan_call(self, text: str, start: int, final: bool) -> tuple[PartialCall | None, int]:
        m = self._HEADER.match(text, start)
        if m is None:
            if final and _is_json(text, start):
                return None, start  # a JSON answer that starts like a call (Llama 3's)
            return PartialCall(None, "", False), len(text)
        name = json.loads(f'"{m.group(1)}"')
        body_at = m.end()
        try:
            _, args_end = _DECODER.raw_decode(text, body_at)
        except ValueError:
            return PartialCall(name, self._undecided_args(text[body_at:], final), False), len(text)
        sep = self.separator.strip()  # a separator between calls is not prose
        tail = re.compile(r"\s*\}" + re.escape(self.end)
                          + (rf"(?:\s*{re.escape(sep)})?" if sep else "")).match(text, args_end)
        if tail is None:  # the object closed; the wrapper has not yet
            return PartialCall(name, text[body_at:args_end], False, True), len(text)
        return PartialCall(name, text[body_at:args_end], True, True), tail.end()

    @staticmethod
    def _undecided_args(raw: str, final: bool) -> str:
        # Trailing '}' and blanks may belong to the wrapper, not the arguments: wait.
        return raw if final else raw.rstrip("} \n\t")


def _sequence(elements: list[dict[str, Any]]) -> dict[str, Any]:
    return elements[0] if len(elements) == 1 else {"type": "sequence", "elements": elements}


def _is_json(text: str, start: int) -> bool:
    """`text[start:]` is exactly one JSON value (blanks around it allowed)."""
    try:
        _, end = _DECODER.raw_decode(text, start)
    except ValueError:
        return False
    return not text[end:].strip()


class HermesFormat(ToolCallFormat):
    name = "hermes"
    trigger = "<tool_call>"
    args_key = "arguments"
    end = "\n</tool_call>"
    separator = "\n"
    _HEADER = re.compile(r'<tool_call>\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*'
                         r'"arguments"\s*:\s*')

    def _begin(self, fn: Function) -> str:
        return f'<tool_call>\n{{"name": {json.dumps(fn.name)}, "arguments": '


class Llama3JsonFormat(ToolCallFormat):
    name = "llama3_json"
    trigger = '{"name": '
    args_key = "parameters"
    end = ""
    separator = "; "
    _HEADER = re.compile(r'\{"name": "((?:[^"\\]|\\.)*)"\s*,\s*"parameters"\s*:\s*')

    def _begin(self, fn: Function) -> str:
        return f'{{"name": {json.dumps(fn.name)}, "parameters": '


def format_for_template(template: str | None) -> ToolCallFormat:
    """Llama 3 templates (header ids) call in JSON; everything else in Hermes tags."""
    if template and "<|start_header_id|>" in template:
        return Llama3JsonFormat()
    return HermesFormat()
