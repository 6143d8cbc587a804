"""Conversation items: the request's `input` checked and normalised, and the whole
conversation turned into chat messages for the chat template.

Normalised items (what a stored response keeps as its context):
    {"type": "message", "role": "user"|"assistant"|"system"|"developer", "content": str}
    {"type": "function_call", "call_id", "name", "arguments": str}
    {"type": "function_call_output", "call_id", "output": str}
A response's own output items (messages with output_text parts, function calls) are valid
input, so a client may send `response.output` back as the next input.
"""

from __future__ import annotations

from typing import Any

from serving.errors import bad_request

ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text")


def _text_of(content: Any, where: str) -> str:
    """A message's text: a string, or text parts joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request("Message content must be a string or a list of content parts",
                          where)
    texts = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind in TEXT_PARTS or kind == "refusal":
            raise bad_request(f"A {kind} part needs a string `text`", at)
        else:
            raise bad_request(f"Content parts of type {kind!r} are not supported: this "
                              "server takes text only", at)
    return "".join(texts)


def _string(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or (key != "arguments" and not value):
        raise bad_request(f"Missing or invalid `{key}`: a non-empty string is required",
                          f"{where}.{key}")
    return value


def _item(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad_request("An input item must be an object", where)
    kind = raw.get("type", "message")  # an easy input message may leave out its type
    if kind == "message":
        role = raw.get("role")
        if role not in ROLES:
            raise bad_request(f"Invalid role {role!r}: expected one of {', '.join(ROLES)}",
                              f"{where}.role")
        return {"type": "message", "role": role,
                "content": _text_of(raw.get("content"), f"{where}.content")}
    if kind == "function_call":
        return {"type": "function_call", "call_id": _string(raw, "call_id", where),
                "name": _string(raw, "name", where),
                "arguments": _string(raw, "arguments", where)}
    if kind == "function_call_output":
        output = raw.get("output")
        text = output if isinstance(output, str) else _text_of(output, f"{where}.output")
        return {"type": "function_call_output", "call_id": _string(raw, "call_id", where),
                "output": text}
    raise bad_request(f"Input items of type {kind!r} are not supported: use message, "
                      "function_call or function_call_output", f"{where}.type")


def normalize_input(raw: str | list[Any], param: str = "input") -> list[dict[str, Any]]:
    """`input` (a string or a list of items) as normalised items; 400 naming the item."""
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    return [_item(item, f"{param}[{i}]") for i, item in enumerate(raw)]


def _call(item: dict[str, Any]) -> dict[str, Any]:
    return {"id": item["call_id"], "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]}}


def to_messages(items: list[dict[str, Any]], instructions: str | None) -> list[dict[str, Any]]:
    """Chat messages: instructions as the system message; `developer` is `system` (chat
    templates know no developer role); calls join the assistant turn they follow (parallel
    calls are one assistant message); outputs become `tool` messages."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        kind = item["type"]
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": item["content"]})
        elif kind == "function_call":
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last["tool_calls"] = [*(last.get("tool_calls") or []), _call(item)]
            else:
                messages.append({"role": "assistant", "content": None,
                                 "tool_calls": [_call(item)]})
        else:
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": item["output"]})
    if not messages:
        raise bad_request("The conversation is empty: give `input` (or `instructions`)",
                          "input")
    return messages
