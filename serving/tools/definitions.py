"""The request's tools, normalised: both dialects (OpenAI `tools` + `tool_choice` and the
legacy `functions` + `function_call`) become one ToolRequest, or a 400 naming the field."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from serving.errors import bad_request
from serving.schemas import check_json_schema

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


@dataclass(frozen=True)
class Function:
    name: str
    description: str | None
    parameters: dict[str, Any]

    def as_openai_tool(self) -> dict[str, Any]:
        fn: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            fn["description"] = self.description
        return {"type": "function", "function": fn}


@dataclass(frozen=True)
class ToolRequest:
    functions: list[Function]
    choice: str  # "auto" | "required" | "named"
    named: str | None = None  # the forced function when choice == "named"
    parallel: bool = True
    legacy: bool = False  # answer with message.function_call (one call)
    by_name: dict[str, Function] = field(default_factory=dict)

    @property
    def allowed(self) -> list[Function]:
        """The functions the grammar may call."""
        return [self.by_name[self.named]] if self.named else list(self.functions)


def _function(raw: Any, where: str) -> Function:
    if not isinstance(raw, dict):
        raise bad_request("A function definition must be an object", where)
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise bad_request("A function name must be 1-64 letters, digits, '_' or '-'",
                          f"{where}.name")
    desc = raw.get("description")
    if desc is not None and not isinstance(desc, str):
        raise bad_request("A function description must be a string", f"{where}.description")
    params = raw.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, dict):
        raise bad_request("Function parameters must be a JSON schema object",
                          f"{where}.parameters")
    check_json_schema(params, f"{where}.parameters", f"JSON schema for function {name!r}")
    if params.get("type", "object") != "object":
        raise bad_request("Function parameters must describe an object (type 'object')",
                          f"{where}.parameters")
    extra = raw.get("required")  # the legacy document puts `required` beside `parameters`
    if isinstance(extra, list) and "required" not in params:
        params = {**params, "required": extra}
    return Function(name, desc, params)


def _functions(raws: Any, param: str, wrapped: bool) -> list[Function]:
    if not isinstance(raws, list) or not raws:
        raise bad_request(f"`{param}` must be a non-empty list", param)
    out = []
    for i, raw in enumerate(raws):
        where = f"{param}[{i}]"
        if wrapped:
            if not isinstance(raw, dict) or raw.get("type") != "function":
                raise bad_request("Only tools of type 'function' are supported", f"{where}.type")
            raw, where = raw.get("function"), f"{where}.function"
        out.append(_function(raw, where))
    names = [f.name for f in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise bad_request(f"Function names must be unique; repeated: {', '.join(dupes)}", param)
    return out


def _choice(raw: Any, names: set[str], param: str, legacy: bool) -> tuple[str, str | None]:
    """('none'|'auto'|'required'|'named', name)."""
    modes = ("none", "auto") if legacy else ("none", "auto", "required")
    if isinstance(raw, str) and raw in modes:
        return raw, None
    name = None
    if legacy and isinstance(raw, str):
        name = raw  # the legacy dialect also takes a bare function name
    elif isinstance(raw, dict):
        inner = raw if legacy else (raw.get("function") if raw.get("type") == "function" else None)
        name = inner.get("name") if isinstance(inner, dict) else None
    if not isinstance(name, str):
        shape = ("'none', 'auto', a function name or {\"name\": ...}" if legacy else
                 "'none', 'auto', 'required' or {\"type\": \"function\", \"function\": "
                 "{\"name\": ...}}")
        raise bad_request(f"`{param}` must be {shape}", param)
    if name not in names:
        raise bad_request(f"`{param}` names function {name!r}, which is not among the "
                          f"given ones ({', '.join(sorted(names))})", param)
    return "named", name


def tool_request(tools: Any, tool_choice: Any, functions: Any, function_call: Any,
                 parallel_tool_calls: bool | None) -> ToolRequest | None:
    """The tools to offer, or None when the model must answer in text only."""
    if tools is not None and functions is not None:
        raise bad_request("Give either `tools` or the legacy `functions`, not both", "functions")
    if tools is None and tool_choice is not None:
        raise bad_request("`tool_choice` is only allowed when `tools` are given", "tool_choice")
    if functions is None and function_call is not None:
        raise bad_request("`function_call` is only allowed when `functions` are given",
                          "function_call")
    legacy = functions is not None
    if tools is None and not legacy:
        return None
    raw_choice = function_call if legacy else tool_choice
    if raw_choice == "none" and (functions if legacy else tools) == []:
        return None  # nothing offered, nothing to call: what some clients send by default
    fns = _functions(functions if legacy else tools, "functions" if legacy else "tools",
                     wrapped=not legacy)
    by_name = {f.name: f for f in fns}
    param = "function_call" if legacy else "tool_choice"
    choice, named = _choice("auto" if raw_choice is None else raw_choice, set(by_name), param,
                            legacy)
    if choice == "none":
        return None
    parallel = False if legacy else parallel_tool_calls is not False
    return ToolRequest(fns, choice, named, parallel, legacy, by_name)
