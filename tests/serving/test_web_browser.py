"""The chat page in a real browser (headless Chromium through WebDriver) against SmolLM2.

The shared `smol_server` (SmolLM2, 512 tokens of context, API key sk-test, no embedding
model) serves most tests; the retrieval test starts SmolLM2 with all-MiniLM-L6-v2 beside
it. Every answer is bounded by max_tokens. Skipped, saying why, without Chromium (failed
instead under ENGINE_REQUIRE_BROWSER=1, as CI runs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import smollm2_path
from tests.serving.browser import (
    DESKTOP,
    PHONE,
    answered,
    assistant_views,
    browser_or_skip,
    by_id,
    css,
    enter_key,
    is_ready,
    open_page,
    reload,
    running_requests,
    screenshot_dir,
    send,
    set_settings,
    start_chrome,
    streamed_text,
    wait,
    wait_idle,
)
from tests.serving.servers import API_KEY, SMOL, Server, cache_prompt, start_server, stop_server

pytestmark = pytest.mark.slow

# Collects every distinct text of the last answer as it streams (one entry per repaint).
WATCH_STREAM = """
window.__seen = [];
new MutationObserver(() => {
  const views = document.querySelectorAll('#messages article.assistant .body');
  if (!views.length) return;
  const text = views[views.length - 1].textContent;
  if (text && window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
}).observe(document.getElementById('messages'), {subtree: true, childList: true,
                                                  characterData: true});
"""


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def chrome(downloads: Path) -> Iterator[Any]:
    browser_or_skip()
    driver = start_chrome(downloads)
    yield driver
    driver.quit()


@pytest.fixture
def page(chrome: Any, smol_server: Server) -> Any:
    """The page on the shared SmolLM2 server, fresh storage, key entered."""
    open_page(chrome, smol_server)
    return chrome


def answer_text(view: Any) -> str:
    return view.find_element("css selector", ".body").text


def stats_text(view: Any) -> str:
    return view.find_element("css selector", ".stats").text


def test_api_key_prompt_and_a_wrong_key(chrome: Any, smol_server: Server) -> None:
    open_page(chrome, smol_server, key=None)
    dialog = by_id(chrome, "key-dialog")
    wait(chrome, lambda d: dialog.get_attribute("open") is not None, "the key prompt")
    assert "401" in by_id(chrome, "key-error").text
    from selenium.webdriver.common.keys import Keys

    refused = answered(smol_server, "/v1/models", "401")
    by_id(chrome, "key-input").send_keys(Keys.ESCAPE)  # dismissed: the page asks the server
    wait(chrome, lambda d: answered(smol_server, "/v1/models", "401") == refused + 1
         and dialog.get_attribute("open") is not None, "the prompt back after Esc")
    enter_key(chrome, "sk-wrong")
    wait(chrome, lambda d: "401" in by_id(d, "key-error").text
         and dialog.get_attribute("open") is not None, "the prompt again after a wrong key")
    assert "Incorrect or missing API key" in by_id(chrome, "key-error").text
    assert chrome.execute_script("return sessionStorage.getItem('engine-chat/api-key')") \
        == "sk-wrong"
    enter_key(chrome, API_KEY)
    wait(chrome, is_ready, "the page to load")
    assert dialog.get_attribute("open") is None
    options = [o.get_attribute("value") for o in css(chrome, "#model option")]
    assert options == [SMOL]
    # Kept for this tab only: not in localStorage.
    assert chrome.execute_script("return localStorage.getItem('engine-chat/api-key')") is None


def test_paris_streams_in_then_edit_and_resend(page: Any, smol_server: Server) -> None:
    # The page's request and the direct one below start from the same prefix-cache state.
    question = [{"role": "user", "content": "What is the capital of France?"}]
    cache_prompt(smol_server, {"model": SMOL, "messages": question})
    set_settings(page, temperature=0, max_tokens=24)
    page.execute_script(WATCH_STREAM)
    send(page, "What is the capital of France?")
    wait(page, lambda d: by_id(d, "stop").is_displayed(), "the Stop button while streaming")
    view = wait_idle(page)
    text = answer_text(view)
    assert "Paris" in text, text
    seen = page.execute_script("return window.__seen")
    partial = [s for s in seen if s.strip() not in ("", "…") and s != text]
    assert len(partial) >= 2, f"the answer did not stream in: {seen}"
    assert all(len(s) < len(text) for s in partial), seen
    # The page's token count is the server's own usage for the same request.
    status, direct = smol_server.http("POST", "/v1/chat/completions", {
        "model": SMOL, "temperature": 0, "max_tokens": 24, "messages": question})
    assert status == 200 and "Paris" in direct["choices"][0]["message"]["content"]
    stats = stats_text(view)
    assert f"{direct['usage']['completion_tokens']} tokens" in stats, stats
    assert "first token" in stats and "tokens/s" in stats and "finish: stop" in stats, stats
    # Edit the question and send it again: what followed is answered anew.
    css(page, "#messages article.user .act-edit")[0].click()
    area = css(page, "#messages .edit-area")[0]
    area.clear()
    area.send_keys("What is the capital of Germany?")
    css(page, "#messages .act-resend")[0].click()
    view = wait_idle(page)
    assert "Berlin" in answer_text(view), answer_text(view)
    users = css(page, "#messages article.user")
    assert [u.find_element("css selector", ".body").text for u in users] == [
        "What is the capital of Germany?"]
    assert len(assistant_views(page)) == 1


def test_stop_frees_the_server_and_regenerate(page: Any, smol_server: Server) -> None:
    from selenium.webdriver.common.keys import Keys

    before = answered(smol_server)
    set_settings(page, temperature=0, max_tokens=400)
    send(page, "Count from 1 to 300, one number per line.")
    wait(page, lambda d: len(streamed_text(d)) > 10, "some of the answer")
    assert running_requests(smol_server, SMOL) == 1  # it is still generating
    by_id(page, "input").send_keys(Keys.ESCAPE)  # Esc stops
    view = wait_idle(page)
    assert "Stopped by you" in stats_text(view)
    wait(page, lambda d: running_requests(smol_server, SMOL) == 0, "the server to free it",
         timeout=30)
    # Regenerate: the answer is asked for again and replaced (the Stop button this time).
    css(page, "#messages .act-regenerate")[0].click()
    wait(page, lambda d: len(streamed_text(d)) > 10, "the new answer")
    assert running_requests(smol_server, SMOL) == 1
    by_id(page, "stop").click()
    wait_idle(page)
    wait(page, lambda d: running_requests(smol_server, SMOL) == 0, "the server to free it",
         timeout=30)
    wait(page, lambda d: answered(smol_server) == before + 2, "two requests logged")
    assert len(assistant_views(page)) == 1 and len(css(page, "#messages article.user")) == 1
    # A short answer cut by max_tokens says so plainly.
    set_settings(page, max_tokens=3)
    send(page, "Tell me about Paris.")
    view = wait_idle(page)
    assert "finish: length" in stats_text(view) and "token limit" in stats_text(view)


def test_conversations_persist_rename_export_delete(page: Any, downloads: Path) -> None:
    set_settings(page, temperature=0, max_tokens=8, system="Answer in one short sentence.")
    send(page, "What is the capital of France?")
    first_answer = answer_text(wait_idle(page))
    by_id(page, "new-chat").click()
    assert css(page, "#messages article") == []
    send(page, "Name a colour.")
    wait_idle(page)
    titles = [b.text for b in css(page, "#conversations .conv-open")]
    assert titles == ["Name a colour.", "What is the capital of France?"]
    css(page, "#conversations .conv-open")[1].click()  # back to the first conversation
    assert answer_text(assistant_views(page)[-1]) == first_answer
    assert by_id(page, "system").get_attribute("value") == "Answer in one short sentence."
    reload(page)  # the key stays for the tab; conversations stay in the browser
    assert answer_text(assistant_views(page)[-1]) == first_answer
    assert len(css(page, "#conversations li")) == 2
    assert by_id(page, "max_tokens").get_attribute("value") == "8"
    # Rename, export, delete.
    set_settings(page)  # opens the panel
    by_id(page, "rename").click()
    field = css(page, "#conversations .rename-input")[0]
    assert field.get_attribute("value") == "What is the capital of France?"
    field.send_keys("France\n")  # the old name is selected: typing replaces it
    assert "France" in [b.text for b in css(page, "#conversations .conv-open")]
    by_id(page, "export").click()
    exported = downloads / "France.json"
    wait(page, lambda d: exported.exists(), "the exported file")
    body = json.loads(exported.read_text())
    assert body["title"] == "France" and body["system"] == "Answer in one short sentence."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["messages"][1]["content"] == first_answer
    by_id(page, "delete").click()
    by_id(page, "delete").click()  # the second click confirms
    assert [b.text for b in css(page, "#conversations .conv-open")] == ["Name a colour."]
    reload(page)
    assert [b.text for b in css(page, "#conversations .conv-open")] == ["Name a colour."]


def test_server_errors_are_shown(page: Any) -> None:
    set_settings(page, temperature=5, max_tokens=8)  # the server allows 0..2
    send(page, "Hello")
    view = wait_idle(page)
    error = view.find_element("css selector", ".msg-error").text
    assert error.startswith("Error 400:") and "temperature" in error, error
    # Invalid tools JSON is caught before sending, with the reason.
    set_settings(page, temperature=0)
    css(page, ".tools-editor summary")[0].click()
    set_settings(page, tools="[{not json")
    send(page, "Hello again")
    assert "Tools: not valid JSON" in by_id(page, "banner").text
    assert len(assistant_views(page)) == 1  # nothing was sent


def test_tool_calls_show_as_cards(page: Any) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"]}}}]
    set_settings(page, temperature=0, max_tokens=96)  # one call takes about 60
    css(page, ".tools-editor summary")[0].click()
    set_settings(page, tools=json.dumps(tools))
    from selenium.webdriver.support.ui import Select

    Select(by_id(page, "tool_choice")).select_by_value("required")
    send(page, "What is the weather like in Paris?")
    view = wait_idle(page)
    cards = view.find_elements("css selector", ".tool-card")
    assert len(cards) >= 1
    assert cards[0].find_element("css selector", ".tool-name").text == "get_weather"
    args = json.loads(cards[0].find_element("css selector", ".tool-args").text)
    assert isinstance(args["city"], str)
    assert "finish: tool_calls" in stats_text(view)


def test_markdown_is_rendered_and_never_live_html(page: Any, smol_server: Server) -> None:
    """Model output with HTML in it shows as text; Markdown becomes elements."""
    content = ("# Title\n\nSome **bold** and `code` and a [link](https://example.org) and "
               "[bad](javascript:alert(1)).\n\n<img src=x onerror=\"window.__pwned=1\">\n\n"
               "- one\n- two\n  - nested\n\n```python\ndef f(x):\n    return 'hi'  # note\n```\n")
    conv = {"id": "md", "title": "Markdown", "renamed": True, "created": 1, "updated": 1,
            "model": SMOL, "system": "", "params": {}, "rag": False, "tools": "",
            "messages": [{"role": "user", "content": "<b>not bold</b>"},
                         {"role": "assistant", "content": content}]}
    page.execute_script("localStorage.setItem('engine-chat/conversations/v1', arguments[0]);"
                        "localStorage.setItem('engine-chat/active', 'md');", json.dumps([conv]))
    reload(page)
    body = assistant_views(page)[0].find_element("css selector", ".body")
    assert body.find_elements("tag name", "img") == []
    assert page.execute_script("return window.__pwned") is None
    assert '<img src=x onerror="window.__pwned=1">' in body.text
    assert body.find_element("tag name", "h1").text == "Title"
    assert body.find_element("tag name", "strong").text == "bold"
    links = body.find_elements("tag name", "a")
    assert [a.get_attribute("href") for a in links] == ["https://example.org/"]
    assert "[bad](javascript:alert(1))" in body.text
    assert [li.text.split("\n")[0] for li in body.find_elements("css selector", "ul > li")] \
        == ["one", "two", "nested"]
    code = body.find_element("css selector", ".code-block code")
    assert code.find_element("css selector", ".tok-keyword").text == "def"
    assert code.find_element("css selector", ".tok-string").text == "'hi'"
    assert code.find_element("css selector", ".tok-comment").text == "# note"
    user = css(page, "#messages article.user .body")[0]
    assert user.text == "<b>not bold</b>" and user.find_elements("tag name", "b") == []
    # The code block's Copy button puts the code on the clipboard: paste it back.
    from selenium.webdriver.common.keys import Keys

    copy = body.find_element("css selector", ".copy-code")
    copy.click()
    wait(page, lambda d: copy.text == "Copied", "the copy to be confirmed")
    box = by_id(page, "input")
    box.send_keys(Keys.CONTROL, "v")
    assert box.get_attribute("value") == "def f(x):\n    return 'hi'  # note"
    # Shift+Enter is a new line, not a send.
    box.clear()
    box.send_keys("a", Keys.SHIFT, Keys.ENTER, Keys.NULL, "b")
    assert box.get_attribute("value") == "a\nb"
    assert len(css(page, "#messages article")) == 2
    # Light and dark follow the system setting.
    background = "return getComputedStyle(document.body).backgroundColor"
    light = page.execute_script(background)
    page.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        dark = page.execute_script(background)
    finally:
        page.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    assert light == "rgb(255, 255, 255)" and dark == "rgb(23, 25, 29)", (light, dark)


@pytest.fixture(scope="module")
def rag_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """SmolLM2 with all-MiniLM-L6-v2 beside it: retrieval on."""
    from tests.serving.embedding_support import MINILM
    from weights import model_path

    smol, minilm = smollm2_path(), model_path(MINILM)
    if not smol.exists() or not (minilm / "model.safetensors").exists():
        pytest.skip("SmolLM2 or all-MiniLM-L6-v2 is not fetched; run python -m weights.fetch")
    browser_or_skip()  # no server start for tests that will skip anyway
    tmp = tmp_path_factory.mktemp("rag-web")
    server = start_server(["--model", str(smol), "--served-model-name", SMOL,
                           "--max-model-len", "512", "--embedding-model", str(minilm),
                           "--embedding-model-name", MINILM, "--data-dir", str(tmp / "data")],
                          tmp / "server.log")
    yield server
    assert stop_server(server) == 0, server.log_tail()


NOTES = ("# Project notes\n\nThe launch code for Project Bluebird is 4417.\n\n"
         "The mascot of the team is a green heron named Pip.\n")


def test_documents_answer_from_an_upload(chrome: Any, rag_server: Server,
                                         tmp_path: Path,
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    open_page(chrome, rag_server)
    options = [o.get_attribute("value") for o in css(chrome, "#model option")]
    assert options == [SMOL]  # the embedding model is not offered for chat
    doc = tmp_path / "notes.md"
    doc.write_text(NOTES)
    by_id(chrome, "doc-file").send_keys(str(doc))
    by_id(chrome, "doc-upload").click()
    wait(chrome, lambda d: "stored" in by_id(d, "doc-status").text, "the upload")
    wait(chrome, lambda d: [e.text for e in css(d, "#doc-list .doc-name")] == ["notes.md"],
         "the document in the list")
    set_settings(chrome, temperature=0, max_tokens=32, rag=True)
    send(chrome, "What is the launch code for Project Bluebird?")
    view = wait_idle(chrome)
    assert "4417" in answer_text(view), answer_text(view)
    chunks = view.find_element("css selector", ".chunks-card")
    assert chunks.find_element("tag name", "summary").text == "Answered from 1 document chunk"
    chunks.find_element("tag name", "summary").click()
    assert "The launch code for Project Bluebird is 4417." in chunks.find_element(
        "css selector", ".chunk-source").text
    by_id(chrome, "toggle-settings").click()  # the conversation alone in the pictures
    shots = screenshot_dir(tmp_path_factory)
    chrome.save_screenshot(str(shots / "chat-desktop.png"))
    chrome.set_window_size(*PHONE)
    try:
        time.sleep(0.3)  # let the layout settle at the new width before the picture
        chrome.save_screenshot(str(shots / "chat-phone.png"))
        # Nothing wider than the phone: no sideways scrolling.
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]
        # At phone width the conversations are a drawer, opened from the top bar.
        assert not by_id(chrome, "new-chat").is_displayed()
        by_id(chrome, "open-sidebar").click()
        wait(chrome, lambda d: by_id(d, "new-chat").is_displayed(), "the drawer")
    finally:
        chrome.set_window_size(*DESKTOP)
    css(chrome, "#doc-list .doc-delete")[0].click()
    wait(chrome, lambda d: "deleted" in by_id(d, "doc-status").text, "the deletion")
    status, files = rag_server.http("GET", "/v1/files")
    assert status == 200 and files["data"] == []
