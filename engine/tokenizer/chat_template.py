"""Chat templates: render a conversation to a prompt string the way HF transformers does.

The Jinja environment mirrors `apply_chat_template`: a sandbox, trim_blocks + lstrip_blocks,
loop controls, a `tojson` that keeps unicode and HTML characters, `raise_exception` and
`strftime_now`. Templates are compiled once and cached. When a model ships no template,
`fallback_template` picks Llama-3, ChatML or Llama-2 from the tokenizer's special tokens.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

if TYPE_CHECKING:
    from engine.tokenizer.tokenizer import Tokenizer


class ChatTemplateError(ValueError):
    """The template rejected the conversation or failed to render."""


CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3_TEMPLATE = (
    "{{ bos_token or '' }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ (message['content'] or '') | trim }}{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

# [INST] blocks; a leading system message goes inside the first user turn in <<SYS>> tags.
LLAMA2_TEMPLATE = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = none %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% if message['role'] == 'user' %}"
    "{{ (bos_token or '') + '[INST] ' }}"
    "{% if loop.first and system %}{{ '<<SYS>>\\n' + system | trim + '\\n<</SYS>>\\n\\n' }}{% endif %}"
    "{{ (message['content'] or '') | trim + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + (message['content'] or '') | trim + ' ' + (eos_token or '') }}"
    "{% else %}"
    "{{ raise_exception('the Llama-2 chat format has no place for a ' + message['role']"
    " + ' message here') }}"
    "{% endif %}"
    "{% endfor %}"
)


def fallback_template(special_tokens: Collection[str]) -> str:
    """A built-in template chosen by the special tokens the tokenizer knows."""
    if "<|start_header_id|>" in special_tokens:
        return LLAMA3_TEMPLATE
    if "<|im_start|>" in special_tokens:
        return CHATML_TEMPLATE
    return LLAMA2_TEMPLATE


def render_chat(
    template: str | None,
    messages: list[dict[str, Any]],
    *,
    bos_token: str | None,
    eos_token: str | None,
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    special_tokens: Collection[str] = (),
    **kwargs: Any,
) -> str:
    """Render `messages` with `template` (or the fallback for `special_tokens` when None)."""
    source = template if template is not None else fallback_template(special_tokens)
    context: dict[str, Any] = {
        "messages": validate_messages(messages),
        "tools": tools,
        "documents": kwargs.pop("documents", None),
        "add_generation_prompt": add_generation_prompt,
        **kwargs,
    }
    # An absent token stays undefined (renders as ''), as in transformers.
    if bos_token is not None:
        context["bos_token"] = bos_token
    if eos_token is not None:
        context["eos_token"] = eos_token
    try:
        return _compile(source).render(**context)
    except ChatTemplateError:
        raise
    except (jinja2.TemplateError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise ChatTemplateError(f"chat template failed to render: {exc}") from exc


def render_for_tokenizer(
    tokenizer: Tokenizer,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    chat_template: str | None = None,
) -> str:
    """Render with the checkpoint's template (or `chat_template`), else a built-in fallback."""
    template = chat_template or tokenizer.chat_template
    if template is None:
        template = fallback_template({tokenizer.id_to_token(i) for i in tokenizer.all_special_ids})
    return render_chat(
        template, messages, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token,
        add_generation_prompt=add_generation_prompt, tools=tools,
    )


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    """Check the conversation's shape; return copies with text-part lists joined."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of message objects")
    return [_validate_message(i, m) for i, m in enumerate(messages)]


# Bad input is a ValueError (the server answers 400), hence the TRY004 waivers below.
def _validate_message(index: int, message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise ValueError(  # noqa: TRY004
            f"messages[{index}] must be an object, got {type(message).__name__}")
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise ValueError(f"messages[{index}].role must be a non-empty string")
    out = dict(message)
    if "content" in out:
        out["content"] = _flatten_content(index, out["content"])
    return out


def _flatten_content(index: int, content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(  # noqa: TRY004
            f"messages[{index}].content must be a string, null or a list of parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise ValueError(f"messages[{index}].content[{j}] must be a {{'type': 'text'}} part "
                             "(only text content is supported)")
        if not isinstance(part.get("text"), str):
            raise ValueError(  # noqa: TRY004
                f"messages[{index}].content[{j}].text must be a string")
        texts.append(part["text"])
    # Text parts are joined by newlines, as the OpenAI-compatible servers do.
    return "\n".join(texts)


def _raise_exception(message: str) -> NoReturn:
    raise ChatTemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Unlike Jinja's own tojson, no HTML escaping: the output is a prompt, not a web page.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _GenerationTag(Extension):
    """Accept `{% generation %}...{% endgeneration %}` (assistant-mask markers) and render
    the body unchanged; we never need the mask."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


@functools.lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, _GenerationTag])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"chat template has a syntax error: {exc}") from exc
