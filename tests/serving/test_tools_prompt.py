"""The prompt side: which format a model gets, the injected system prompt, and how earlier
calls and results are rendered for templates with and without tool support."""

from __future__ import annotations

import json

from engine.tokenizer.chat_template import CHATML_TEMPLATE, LLAMA3_TEMPLATE, render_chat
from serving.tools import plan_tools, prepare_messages, tool_request
from serving.tools.formats import HermesFormat, Llama3JsonFormat

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Find a word",
                                           "parameters": {"type": "object", "properties": {
                                               "word": {"type": "string"}}}}}]
# A template that knows tools (the variable and the calls' arguments as objects).
NATIVE_LLAMA3 = LLAMA3_TEMPLATE.replace(
    "{% for message in messages %}",
    "{% if tools %}{{ 'TOOLS:' + (tools | tojson) }}{% endif %}"
    "{% for message in messages %}"
    "{% for call in message.tool_calls or [] %}"
    "{{ 'CALL:' + (call.function.arguments | tojson) }}{% endfor %}", 1)
TURNS = [
    {"role": "user", "content": "define cat"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "lookup", "arguments": '{"word": "cat"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "a small feline"},
]


def _render(template: str, messages: list, tools: list | None) -> str:
    return render_chat(template, messages, bos_token="<s>", eos_token="</s>", tools=tools)


def test_format_follows_the_template() -> None:
    req = tool_request(TOOLS, "auto", None, None, None)
    assert isinstance(plan_tools(req, CHATML_TEMPLATE).fmt, HermesFormat)
    assert isinstance(plan_tools(req, None).fmt, HermesFormat)
    assert isinstance(plan_tools(req, NATIVE_LLAMA3).fmt, Llama3JsonFormat)
    # A Llama 3 template without tool support gets our injected (Hermes) prompt instead.
    assert isinstance(plan_tools(req, LLAMA3_TEMPLATE).fmt, HermesFormat)
    assert plan_tools(None, CHATML_TEMPLATE) is None


def test_injected_prompt_for_templates_without_tools() -> None:
    req = tool_request(TOOLS, {"type": "function", "function": {"name": "lookup"}}, None, None,
                       None)
    messages, template_tools = prepare_messages(TURNS, req, CHATML_TEMPLATE, HermesFormat())
    assert template_tools is None
    system = messages[0]
    assert system["role"] == "system"
    listed = system["content"].split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert json.loads(listed) == TOOLS[0]
    assert "<tool_call>" in system["content"] and "lookup" in system["content"].rsplit(
        "</tool_call>", 1)[1]  # the forced choice is spelled out after the format
    text = _render(CHATML_TEMPLATE, messages, template_tools)
    call = text.split("<tool_call>\n")[-1].split("\n</tool_call>")[0]
    assert json.loads(call) == {"name": "lookup", "arguments": {"word": "cat"}}
    assert "<tool_response>\na small feline\n</tool_response>" in text


def test_existing_system_message_is_extended() -> None:
    req = tool_request(TOOLS, None, None, None, None)
    messages, _ = prepare_messages([{"role": "system", "content": "Be brief."}, *TURNS[:1]],
                                   req, CHATML_TEMPLATE, HermesFormat())
    assert messages[0]["content"].startswith("Be brief.\n\n# Tools")
    assert [m["role"] for m in messages] == ["system", "user"]


def test_native_templates_get_tools_and_object_arguments() -> None:
    req = tool_request(TOOLS, None, None, None, None)
    legacy_turn = {"role": "assistant", "content": None,
                   "function_call": {"name": "lookup", "arguments": '{"word": "dog"}'}}
    messages, template_tools = prepare_messages([*TURNS, legacy_turn], req, NATIVE_LLAMA3,
                                                Llama3JsonFormat())
    assert template_tools == TOOLS
    text = _render(NATIVE_LLAMA3, messages, template_tools)
    assert 'CALL:{"word": "cat"}' in text and 'CALL:{"word": "dog"}' in text
    assert "TOOLS:" in text


def test_plain_conversations_pass_through() -> None:
    messages, template_tools = prepare_messages(TURNS[:1], None, CHATML_TEMPLATE, None)
    assert messages == TURNS[:1] and template_tools is None
