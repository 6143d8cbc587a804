"""The prompt side of tool calling.

A chat template that knows tools (it reads the `tools` variable) gets them, and the
conversation's tool calls and results, as it expects them. A template that does not (ChatML,
as SmolLM2 ships it) gets this one documented format, spliced into the system message:

    # Tools
    You may call one or more functions to assist with the user query.
    Function signatures, one JSON object per line, within <tools></tools>:
    <tools>
    {"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}
    </tools>
    To call a function, answer with one block per call, and nothing after the last block:
    <tool_call>
    {"name": <function-name>, "arguments": <arguments-json-object>}
    </tool_call>

(the Hermes convention; `<tool_call>` is the trigger the grammar waits for). Earlier calls
are written back the same way, and tool results as `<tool_response>` blocks in a `tool`
message, so a second turn reads like the first.
"""

from __future__ import annotations

import json
from typing import Any

from serving.tools.definitions import ToolRequest
from serving.tools.formats import HermesFormat, ToolCallFormat


def template_knows_tools(template: str | None) -> bool:
    return bool(template) and "tools" in template  # type: ignore[operator]


def tool_system_prompt(tools: ToolRequest) -> str:
    lines = "\n".join(json.dumps(f.as_openai_tool(), ensure_ascii=False) for f in tools.functions)
    text = (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n"
        "Function signatures, one JSON object per line, within <tools></tools>:\n"
        f"<tools>\n{lines}\n</tools>\n\n"
        "To call a function, answer with one block per call, and nothing after the last "
        "block:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <arguments-json-object>}\n</tool_call>'
    )
    if tools.choice == "named":
        text += f"\n\nCall the function {tools.named} now."
    elif tools.choice == "required":
        text += "\n\nCall at least one function now."
    return text


def _calls_of(message: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, arguments JSON) of an assistant message's tool_calls / function_call."""
    calls = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function", {}) if isinstance(call, dict) else {}
        calls.append((str(fn.get("name", "")), _args_text(fn.get("arguments"))))
    fc = message.get("function_call")
    if isinstance(fc, dict):
        calls.append((str(fc.get("name", "")), _args_text(fc.get("arguments"))))
    return calls


def _args_text(args: Any) -> str:
    return args if isinstance(args, str) else json.dumps(args or {}, ensure_ascii=False)


def _args_object(args: Any) -> Any:
    if isinstance(args, str):
        try:
            return json.loads(args)
        except ValueError:
            return args
    return args


def _native(message: dict[str, Any]) -> dict[str, Any]:
    """For templates that know tools: arguments as objects (what they `tojson`), the legacy
    function_call as a tool call, `function` results as `tool` ones."""
    out = dict(message)
    calls = [dict(c) for c in out.get("tool_calls") or [] if isinstance(c, dict)]
    fc = out.pop("function_call", None)
    if isinstance(fc, dict):
        calls.append({"type": "function", "function": fc})
    if calls:
        out["tool_calls"] = [{**c, "function": {**c.get("function", {}), "arguments":
                                                _args_object(c.get("function", {}).get(
                                                    "arguments"))}} for c in calls]
    if out.get("role") == "function":
        out["role"] = "tool"
    return out


def _as_text(message: dict[str, Any], fmt: ToolCallFormat) -> dict[str, Any]:
    """For templates that do not: calls and results written into the content."""
    role = message.get("role")
    if role == "assistant" and _calls_of(message):
        blocks = [f'<tool_call>\n{{"name": {json.dumps(n)}, "arguments": {a}}}\n</tool_call>'
                  for n, a in _calls_of(message)]
        text = "\n".join(([message["content"]] if message.get("content") else []) + blocks)
        return {"role": "assistant", "content": text}
    if role in ("tool", "function"):
        return {"role": "tool",
                "content": f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"}
    return message


def prepare_messages(messages: list[dict[str, Any]], tools: ToolRequest | None,
                     template: str | None, fmt: ToolCallFormat | None) -> tuple[
                         list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, tools) for the chat template."""
    if template_knows_tools(template):
        native = [_native(m) for m in messages]
        return native, [f.as_openai_tool() for f in tools.functions] if tools else None
    out = [_as_text(m, fmt if isinstance(fmt, HermesFormat) else HermesFormat())
           for m in messages]
    if tools is None:
        return out, None
    prompt = tool_system_prompt(tools)
    if out and out[0].get("role") == "system":
        first = out[0]
        out[0] = {**first, "content": f"{first.get('content') or ''}\n\n{prompt}".lstrip()}
    else:
        out.insert(0, {"role": "system", "content": prompt})
    return out, None
