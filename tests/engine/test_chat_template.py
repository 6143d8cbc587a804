"""render_chat against transformers' apply_chat_template, the fallbacks, message validation."""

from __future__ import annotations

from typing import Any

import pytest

from engine.tokenizer.chat_template import (
    CHATML_TEMPLATE,
    LLAMA2_TEMPLATE,
    LLAMA3_TEMPLATE,
    ChatTemplateError,
    fallback_template,
    render_chat,
)
from tests.engine.tokenizer_fixtures import CHATML, train_byte_level_bpe, write_hf_dir

CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! 👋"}, {"role": "user", "content": "Café <b>&</b>?"}],
    [{"role": "user", "content": "  spaced  \n"}, {"role": "assistant", "content": "ok"}],
]

# Exercises what the environment must provide: tojson (unicode and HTML kept, indent),
# loop controls, namespace, raise_exception, strftime_now, tools/documents/kwargs, and
# trim_blocks + lstrip_blocks (the newlines and indentation around block tags).
FEATURES_TEMPLATE = """{% set ns = namespace(n=0) %}
{% if tools %}
    Tools: {{ tools | tojson }}
    Pretty: {{ tools[0] | tojson(indent=2) }}
{% endif %}
{% for message in messages %}
    {% if message['role'] == 'tool' %}{% continue %}{% endif %}
    {% if loop.index > 5 %}{% break %}{% endif %}
    {% set ns.n = ns.n + 1 %}
    [{{ message['role'] | upper }}] {{ message['content'] }}
{% endfor %}
count={{ ns.n }} year_len={{ strftime_now('%Y') | length }} extra={{ extra_var | default('none') }}
docs={{ documents is none }} {{ bos_token }}|{{ eos_token }}
{% if messages[-1]['role'] == 'forbidden' %}{{ raise_exception('forbidden role') }}{% endif %}
{% if add_generation_prompt %}<assistant>{% endif %}
"""

GENERATION_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}"
    "{{ m['content'] }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
)

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Météo <city> & \"forecast\"",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    folder = write_hf_dir(tmp_path_factory.mktemp("chat"), train_byte_level_bpe(400))
    return AutoTokenizer.from_pretrained(str(folder))


def ours(template: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    return render_chat(template, messages, bos_token="<|im_start|>", eos_token="<|im_end|>",
                       **kwargs)


@pytest.mark.parametrize("template", [CHATML, CHATML_TEMPLATE, LLAMA3_TEMPLATE, LLAMA2_TEMPLATE,
                                      FEATURES_TEMPLATE, GENERATION_TEMPLATE])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_matches_transformers(hf_tokenizer: Any, template: str,
                              add_generation_prompt: bool) -> None:
    for messages in CONVERSATIONS:
        if template == LLAMA2_TEMPLATE and messages[-1]["role"] != "user":
            messages = messages[:-1]
        want = hf_tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False,
            add_generation_prompt=add_generation_prompt)
        assert ours(template, messages, add_generation_prompt=add_generation_prompt) == want


def test_tools_and_kwargs_match_transformers(hf_tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "Weather in 東京?"},
                {"role": "tool", "content": "sunny"}]
    want = hf_tokenizer.apply_chat_template(messages, chat_template=FEATURES_TEMPLATE,
                                            tokenize=False, tools=TOOLS, extra_var="x",
                                            add_generation_prompt=True)
    got = ours(FEATURES_TEMPLATE, messages, tools=TOOLS, extra_var="x")  # True by default
    assert got == want
    assert 'Météo <city> & \\"forecast\\"' in got  # no HTML escaping, unicode kept


def test_raise_exception_is_a_value_error() -> None:
    with pytest.raises(ChatTemplateError, match="forbidden role"):
        ours(FEATURES_TEMPLATE, [{"role": "forbidden", "content": "x"}])
    with pytest.raises(ValueError, match="syntax error"):
        ours("{% for %}", [{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="failed to render"):
        ours("{{ messages[0]['content'] + 1 }}", [{"role": "user", "content": "x"}])


def test_fallback_choice() -> None:
    assert fallback_template({"<|begin_of_text|>", "<|start_header_id|>"}) == LLAMA3_TEMPLATE
    assert fallback_template(["<|im_start|>", "<|im_end|>"]) == CHATML_TEMPLATE
    assert fallback_template({"<s>", "</s>"}) == LLAMA2_TEMPLATE
    assert fallback_template(()) == LLAMA2_TEMPLATE


def test_fallbacks_write_their_formats() -> None:
    conv = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"}, {"role": "user", "content": "again"}]
    chatml = render_chat(None, conv, bos_token=None, eos_token="<|im_end|>",
                         special_tokens={"<|im_start|>"})
    assert chatml == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                      "<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>user\nagain<|im_end|>\n"
                      "<|im_start|>assistant\n")
    llama3 = render_chat(None, conv[1:2], bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                         special_tokens={"<|start_header_id|>"})
    assert llama3 == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n")
    llama2 = render_chat(None, conv, bos_token="<s>", eos_token="</s>")
    assert llama2 == "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nhi [/INST] yo </s><s>[INST] again [/INST]"
    with pytest.raises(ChatTemplateError, match="tool"):
        render_chat(None, [{"role": "tool", "content": "x"}], bos_token="<s>", eos_token="</s>")


def test_content_parts_are_flattened_and_none_kept() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    text = render_chat(CHATML_TEMPLATE, [{"role": "user", "content": parts},
                                         {"role": "assistant", "content": None}],
                       bos_token=None, eos_token=None, add_generation_prompt=False)
    assert text == "<|im_start|>user\na\nb<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
    messages = [{"role": "user", "content": parts}]
    render_chat(CHATML_TEMPLATE, messages, bos_token=None, eos_token=None)
    assert messages[0]["content"] is parts  # the caller's messages are not modified


@pytest.mark.parametrize("messages, match", [
    ("hi", "non-empty list"),
    ([], "non-empty list"),
    (["hi"], r"messages\[0\] must be an object"),
    ([{"content": "x"}], r"messages\[0\].role"),
    ([{"role": 3, "content": "x"}], r"messages\[0\].role"),
    ([{"role": "user", "content": "x"}, {"role": "", "content": "x"}], r"messages\[1\].role"),
    ([{"role": "user", "content": 5}], r"messages\[0\].content must be"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
     r"content\[0\] must be a \{'type': 'text'\} part"),
    ([{"role": "user", "content": [{"type": "text", "text": 1}]}], r"content\[0\].text"),
])
def test_bad_messages_raise(messages: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render_chat(CHATML_TEMPLATE, messages, bos_token=None, eos_token=None)


@pytest.mark.slow
def test_smollm2_template_matches_transformers(smollm2_tokenizer_meta: dict,
                                               smollm2_hf_tokenizer: Any) -> None:
    from engine.tokenizer.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf_metadata(smollm2_tokenizer_meta)
    hf = smollm2_hf_tokenizer
    assert tok.chat_template == hf.chat_template
    for messages in CONVERSATIONS:
        for add in (True, False):
            want = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)
            got = render_chat(tok.chat_template, messages, bos_token=tok.bos_token,
                              eos_token=tok.eos_token, add_generation_prompt=add)
            assert got == want
            assert tok.encode(got, add_special_tokens=False) == hf.encode(
                want, add_special_tokens=False)
