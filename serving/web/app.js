// The chat page: conversations (localStorage), streaming answers, settings, documents.
// Everything the model or the server writes reaches the page as text (textContent or the
// DOM-building Markdown renderer); nothing is ever assigned to innerHTML.

import { ApiError, apiKey, del, getJson, setApiKey, streamChat, upload } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import * as store from "./store.js";

const $ = (id) => document.getElementById(id);
const PARAMS = ["temperature", "top_p", "max_tokens", "seed"];

const state = {
  conversations: store.load(),
  current: null,
  models: [],  // chat model cards from /v1/models
  retrieval: false,
  running: null,  // {controller, conv} while an answer streams
};

// ---- small helpers --------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, className, onClick, label) {
  const b = el("button", className, text);
  b.type = "button";
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = !text;
}

function describe(err) {
  return err instanceof ApiError ? err.describe() : `Error: ${err.message || err}`;
}

function persist() {
  try {
    store.save(state.conversations);
  } catch (e) {
    showBanner(`Could not save conversations in this browser: ${e.message}`);
  }
}

async function copyText(text, b) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch (_) {
    // Plain http on another host is not a secure context: the old way still works there.
    const area = el("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    ok = document.execCommand("copy");
    area.remove();
  }
  if (b) {
    const before = b.textContent;
    b.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => { b.textContent = before; }, 1200);
  }
}

// ---- API key -----------------------------------------------------------------------------

function askForKey(message) {
  return new Promise((resolve) => {
    const dialog = $("key-dialog");
    $("key-error").textContent = message || "";
    $("key-input").value = apiKey();
    const form = $("key-form");
    const done = (ev) => {
      ev.preventDefault();
      $("key-error").textContent = "";
      form.removeEventListener("submit", done);
      dialog.removeEventListener("close", closed);
      setApiKey($("key-input").value.trim());
      dialog.close();
      resolve();
    };
    // Closed with Esc: go on with the key as it was (a 401 brings the prompt back).
    const closed = () => {
      form.removeEventListener("submit", done);
      resolve();
    };
    form.addEventListener("submit", done);
    dialog.addEventListener("close", closed, { once: true });
    if (!dialog.open) dialog.showModal();
    $("key-input").focus();
  });
}

// Runs `work`; a 401 asks for the key (showing the server's message) and tries again.
async function withKey(work) {
  for (;;) {
    try {
      return await work();
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401) throw e;
      await askForKey(e.describe());
    }
  }
}

// ---- models ---------------------------------------------------------------------------

async function loadModels() {
  const body = await withKey(() => getJson("/v1/models"));
  const cards = body.data || [];
  state.models = cards.filter((c) => c.task !== "embedding");
  state.retrieval = cards.some((c) => c.task === "embedding");
  const select = $("model");
  select.replaceChildren();
  for (const card of state.models) {
    const opt = el("option", "", card.root ? `${card.id} (${card.root})` : card.id);
    opt.value = card.id;
    select.append(opt);
  }
  $("docs-off").hidden = state.retrieval;
  $("docs-on").hidden = !state.retrieval;
  $("rag").disabled = !state.retrieval;
}

function modelCard(id) {
  return state.models.find((m) => m.id === id) || state.models[0];
}

function showDefaults() {
  const card = modelCard(state.current.model) || {};
  const d = card.sampling_defaults || {};
  const shown = (v, fallback) => (v === null || v === undefined ? fallback : String(v));
  $("temperature").placeholder = `default ${shown(d.temperature, "1")}`;
  $("top_p").placeholder = `default ${shown(d.top_p, "1")}`;
  $("max_tokens").placeholder = card.max_model_len
    ? `default: rest of ${card.max_model_len}` : "default: rest of context";
  $("seed").placeholder = "default: random";
}

// ---- conversations -------------------------------------------------------------------------

function current() {
  return state.current;
}

function select(conv) {
  state.current = conv;
  store.setActiveId(conv.id);
  if (!state.models.some((m) => m.id === conv.model)) {  // a model the server no longer has
    conv.model = state.models[0] ? state.models[0].id : "";
  }
  $("model").value = conv.model;
  $("system").value = conv.system;
  for (const p of PARAMS) $(p).value = conv.params[p] ?? "";
  $("rag").checked = !!conv.rag && state.retrieval;
  $("tools").value = conv.tools || "";
  $("tool_choice").value = conv.tool_choice || "auto";
  $("tools-error").textContent = "";
  showDefaults();
  renderList();
  renderMessages();
  closeSidebar();
}

function newChat() {
  const conv = store.newConversation(state.models[0] && state.models[0].id);
  const prev = state.current;
  if (prev) {  // a new chat keeps the model and settings of the one it was opened from
    conv.model = prev.model;
    conv.system = prev.system;
    conv.params = { ...prev.params };
    conv.rag = prev.rag;
    conv.tools = prev.tools;
    conv.tool_choice = prev.tool_choice;
  }
  state.conversations.unshift(conv);
  persist();
  select(conv);
  $("input").focus();
}

function renderList() {
  const list = $("conversations");
  list.replaceChildren();
  for (const conv of state.conversations) {
    const li = el("li", conv === state.current ? "active" : "");
    const open = button(conv.title || "Untitled", "conv-open", () => {
      if (conv !== state.current) select(conv);
    });
    open.title = conv.title;
    li.dataset.id = conv.id;
    li.append(open);
    list.append(li);
  }
  $("conv-title").textContent = state.current ? state.current.title : "";
}

function touch(conv) {
  conv.updated = Date.now();
  const i = state.conversations.indexOf(conv);
  if (i > 0) {  // most recently used first
    state.conversations.splice(i, 1);
    state.conversations.unshift(conv);
  }
}

function rename() {
  const conv = current();
  const li = $("conversations").querySelector(`li[data-id="${CSS.escape(conv.id)}"]`);
  if (!li) return;
  openSidebar();
  const input = el("input", "rename-input");
  input.value = conv.title;
  input.setAttribute("aria-label", "Conversation name");
  li.replaceChildren(input);
  input.focus();
  input.select();
  let finished = false;
  const finish = (keep) => {
    if (finished) return;
    finished = true;
    const title = input.value.trim();
    if (keep && title) {
      conv.title = title.slice(0, 200);
      conv.renamed = true;
      persist();
    }
    renderList();
  };
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); finish(true); }
    if (ev.key === "Escape") { ev.preventDefault(); ev.stopPropagation(); finish(false); }
  });
  input.addEventListener("blur", () => finish(true));
}

let deleteArmed = null;

function deleteConversation() {
  const b = $("delete");
  if (deleteArmed === null) {  // two clicks: the first arms, the second deletes
    b.textContent = "Really delete?";
    deleteArmed = setTimeout(() => { b.textContent = "Delete"; deleteArmed = null; }, 4000);
    return;
  }
  clearTimeout(deleteArmed);
  deleteArmed = null;
  b.textContent = "Delete";
  const conv = current();
  if (state.running && state.running.conv === conv) state.running.controller.abort();
  state.conversations = state.conversations.filter((c) => c !== conv);
  persist();
  if (state.conversations.length) select(state.conversations[0]);
  else newChat();
}

function exportConversation() {
  const conv = current();
  const blob = new Blob([store.exportJson(conv)], { type: "application/json" });
  const a = el("a");
  a.href = URL.createObjectURL(blob);
  a.download = `${(conv.title || "chat").replace(/[^\w.-]+/g, "_").slice(0, 60)}.json`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---- settings -----------------------------------------------------------------------------

function readSettings() {
  const conv = current();
  conv.model = $("model").value;
  conv.system = $("system").value;
  for (const p of PARAMS) conv.params[p] = $(p).value;
  conv.rag = $("rag").checked;
  conv.tools = $("tools").value;
  conv.tool_choice = $("tool_choice").value;
  persist();
}

function parseTools(text) {
  if (!text.trim()) return null;
  let tools;
  try {
    tools = JSON.parse(text);
  } catch (e) {
    throw new Error(`Tools: not valid JSON (${e.message})`);
  }
  if (!Array.isArray(tools) || tools.length === 0) {
    throw new Error("Tools: expected a non-empty JSON array of {\"type\": \"function\", ...}");
  }
  return tools;
}

function number(text, integer) {
  if (text === "" || text === undefined || text === null) return undefined;
  const v = Number(text);
  if (!Number.isFinite(v)) return undefined;
  return integer ? Math.trunc(v) : v;
}

// The request body for the conversation up to (and including) its last user message.
function requestBody(conv) {
  const messages = [];
  if (conv.system.trim()) messages.push({ role: "system", content: conv.system });
  for (const m of conv.messages) {
    if (m.role === "user") messages.push({ role: "user", content: m.content });
    else if (m.role === "assistant" && (m.content || (m.tool_calls && m.tool_calls.length))) {
      const out = { role: "assistant", content: m.content || null };
      if (m.tool_calls && m.tool_calls.length) out.tool_calls = m.tool_calls;
      messages.push(out);
    }
  }
  const body = {
    model: conv.model, messages, stream: true, stream_options: { include_usage: true },
  };
  const p = conv.params;
  const values = {
    temperature: number(p.temperature, false), top_p: number(p.top_p, false),
    max_tokens: number(p.max_tokens, true), seed: number(p.seed, true),
  };
  for (const [k, v] of Object.entries(values)) if (v !== undefined) body[k] = v;
  if (conv.rag && state.retrieval) body.rag = true;
  const tools = parseTools(conv.tools || "");
  if (tools) {
    body.tools = tools;
    body.tool_choice = conv.tool_choice || "auto";
  }
  return body;
}

// ---- messages -------------------------------------------------------------------------------

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  const conv = current();
  if (!conv.messages.length) {
    const empty = el("div", "empty");
    empty.append(el("h1", "", "What can I help with?"));
    empty.append(el("p", "muted", `Model: ${conv.model || "(none)"}. Settings hold the system prompt, ` +
      "sampling, documents and tools of this conversation."));
    box.append(empty);
  }
  conv.messages.forEach((m, i) => box.append(messageView(conv, m, i)));
  box.scrollTop = box.scrollHeight;
  renderList();
}

function messageView(conv, m, index) {
  const view = el("article", `msg ${m.role}`);
  view.dataset.index = String(index);
  const body = el("div", "body");
  view.append(body);
  fillBody(body, m);
  if (m.role === "assistant") {
    view.append(toolCards(m));
    view.append(chunksView(m));
    view.append(statsView(m));
    if (m.error) view.append(el("p", "error-text msg-error", m.error));
  }
  view.append(actions(conv, m, index));
  return view;
}

function fillBody(body, m) {
  body.replaceChildren();
  if (m.role === "assistant") {
    body.append(renderMarkdown(m.content || ""));
    if (m.pending && !m.content && !(m.tool_calls || []).length) body.append(el("span", "typing", "…"));
  } else {
    body.append(el("p", "plain", m.content));
  }
}

function toolCards(m) {
  const box = el("div", "tool-calls");
  for (const call of m.tool_calls || []) {
    const card = el("details", "tool-card");
    card.open = true;
    const fn = call.function || {};
    const summary = el("summary");
    summary.append(el("span", "tool-label", "Tool call"), el("code", "tool-name", fn.name || "?"));
    card.append(summary);
    let args = fn.arguments || "";
    try {
      args = JSON.stringify(JSON.parse(args), null, 2);
    } catch (_) { /* still arriving, or not JSON: shown as it is */ }
    const pre = el("pre", "tool-args");
    pre.append(el("code", "", args));
    card.append(pre);
    box.append(card);
  }
  return box;
}

function chunksView(m) {
  const box = el("div", "chunks");
  if (!m.chunks) return box;
  const d = el("details", "chunks-card");
  const n = m.chunks.length;
  d.append(el("summary", "", n ? `Answered from ${n} document chunk${n > 1 ? "s" : ""}`
    : "No document chunk matched this question"));
  for (const c of m.chunks) {
    const item = el("div", "chunk");
    item.append(el("span", "chunk-score", `score ${Number(c.score).toFixed(3)}`));
    item.append(el("p", "chunk-source", c.source));
    d.append(item);
  }
  box.append(d);
  return box;
}

function statsView(m) {
  const s = m.stats;
  const box = el("div", "stats");
  if (!s) return box;
  const parts = [];
  if (s.tokens !== undefined) parts.push(`${s.tokens} tokens`);
  if (s.ttft_ms !== undefined) parts.push(`first token ${Math.round(s.ttft_ms)} ms`);
  if (s.tokens_per_s !== undefined) parts.push(`${s.tokens_per_s.toFixed(1)} tokens/s`);
  if (s.finish) parts.push(`finish: ${s.finish}`);
  box.textContent = parts.join(" · ");
  if (s.finish === "length") {
    box.append(el("span", "warn", " Cut off: the answer reached the token limit (max_tokens or the context)."));
  }
  if (s.finish === "stopped") box.append(el("span", "warn", " Stopped by you."));
  return box;
}

function actions(conv, m, index) {
  const bar = el("div", "actions");
  const busy = !!state.running;
  const copy = button("Copy", "act-copy", (ev) => copyText(m.content || "", ev.currentTarget));
  bar.append(copy);
  if (m.role === "user") {
    const edit = button("Edit", "act-edit", () => editMessage(conv, index));
    edit.disabled = busy;
    bar.append(edit);
  }
  if (m.role === "assistant" && index === conv.messages.length - 1) {
    const regen = button("Regenerate", "act-regenerate", () => regenerate(conv));
    regen.disabled = busy;
    bar.append(regen);
  }
  return bar;
}

function editMessage(conv, index) {
  const view = $("messages").querySelector(`article[data-index="${index}"]`);
  const m = conv.messages[index];
  const area = el("textarea", "edit-area");
  area.value = m.content;
  area.rows = Math.min(10, m.content.split("\n").length + 1);
  const save = button("Save & send", "primary act-resend", () => {
    const text = area.value.trim();
    if (!text) return;
    conv.messages = conv.messages.slice(0, index);  // what came after is answered anew
    conv.messages.push({ role: "user", content: text });
    persist();
    send(conv);
  });
  const cancel = button("Cancel", "", () => renderMessages());
  const row = el("div", "actions");
  row.append(save, cancel);
  view.replaceChildren(area, row);
  area.focus();
}

function regenerate(conv) {
  if (state.running) return;
  while (conv.messages.length && conv.messages[conv.messages.length - 1].role !== "user") {
    conv.messages.pop();
  }
  if (!conv.messages.length) return;
  persist();
  send(conv);
}

// ---- sending --------------------------------------------------------------------------------

function setRunning(running) {
  $("send").hidden = running;
  $("stop").hidden = !running;
  document.body.classList.toggle("running", running);
}

function titleFrom(text) {
  const line = text.trim().split("\n")[0];
  return line.length > 48 ? `${line.slice(0, 47)}…` : line;
}

function submit() {
  if (state.running) return;
  const text = $("input").value.trim();
  if (!text) return;
  const conv = current();
  readSettings();
  try {
    parseTools(conv.tools || "");  // refused here, the message stays in the box to resend
  } catch (e) {
    $("tools-error").textContent = e.message;
    showBanner(e.message);
    return;
  }
  conv.messages.push({ role: "user", content: text });
  if (!conv.renamed && conv.messages.filter((m) => m.role === "user").length === 1) {
    conv.title = titleFrom(text);
  }
  $("input").value = "";
  persist();
  send(conv);
}

function mergeToolCalls(m, deltas) {
  m.tool_calls = m.tool_calls || [];
  for (const d of deltas) {
    const i = d.index ?? m.tool_calls.length;
    const call = m.tool_calls[i] || (m.tool_calls[i] = { id: "", type: "function", function: { name: "", arguments: "" } });
    if (d.id) call.id = d.id;
    if (d.function && d.function.name) call.function.name = d.function.name;
    if (d.function && d.function.arguments) call.function.arguments += d.function.arguments;
  }
}

async function send(conv) {
  showBanner("");
  if (conv === state.current) readSettings();
  let body;
  try {
    body = requestBody(conv);
  } catch (e) {
    $("tools-error").textContent = e.message;
    showBanner(e.message);
    return;
  }
  const m = { role: "assistant", content: "", pending: true, model: conv.model };
  conv.messages.push(m);
  touch(conv);
  const controller = new AbortController();
  state.running = { controller, conv };
  setRunning(true);
  renderMessages();
  const box = $("messages");
  const view = box.lastElementChild;
  let frame = 0;
  const repaint = () => {
    frame = 0;
    if (state.current !== conv) return;  // another conversation is shown: no view to update
    const fresh = messageView(conv, m, conv.messages.indexOf(m));
    const old = box.querySelector(`article[data-index="${conv.messages.indexOf(m)}"]`) || view;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    old.replaceWith(fresh);
    if (atBottom) box.scrollTop = box.scrollHeight;
  };
  const schedule = () => { if (!frame) frame = requestAnimationFrame(repaint); };

  const start = performance.now();
  let first = null;
  let last = null;
  let pieces = 0;
  let usage = null;
  let finish = null;
  try {
    await withKey(() => streamChat(body, controller.signal, (chunk) => {
      if (chunk.retrieved_chunks) m.chunks = chunk.retrieved_chunks;
      if (chunk.usage) usage = chunk.usage;
      const choice = (chunk.choices || [])[0];
      if (!choice) return;
      const d = choice.delta || {};
      if (d.content || d.tool_calls) {
        const now = performance.now();
        if (first === null) first = now;
        last = now;
        pieces++;
        if (d.content) m.content += d.content;
        if (d.tool_calls) mergeToolCalls(m, d.tool_calls);
        schedule();
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }));
  } catch (e) {
    if (e.name === "AbortError") finish = "stopped";
    else m.error = describe(e);
  } finally {
    if (frame) cancelAnimationFrame(frame);
    const tokens = usage ? usage.completion_tokens : pieces;
    m.pending = false;
    if (first !== null || usage || finish) {
      m.stats = { tokens, finish: finish || (m.error ? "error" : "unknown") };
      if (first !== null) m.stats.ttft_ms = first - start;
      if (first !== null && last > first && tokens > 1) {
        m.stats.tokens_per_s = (tokens - 1) / ((last - first) / 1000);
      }
    }
    state.running = null;
    setRunning(false);
    persist();
    if (state.current === conv) renderMessages();
    else renderList();
  }
}

function stop() {
  if (state.running) state.running.controller.abort();
}

// ---- documents --------------------------------------------------------------------------------

async function refreshDocs() {
  if (!state.retrieval) return;
  const list = $("doc-list");
  try {
    const body = await withKey(() => getJson("/v1/files"));
    list.replaceChildren();
    for (const f of body.data || []) {
      const li = el("li", "doc");
      li.dataset.id = f.id;
      li.append(el("span", "doc-name", f.filename));
      li.append(button("Delete", "doc-delete", () => deleteDoc(f), `Delete ${f.filename}`));
      list.append(li);
    }
    if (!list.children.length) list.append(el("li", "muted", "No documents yet."));
  } catch (e) {
    $("doc-status").textContent = describe(e);
  }
}

async function uploadDoc() {
  const file = $("doc-file").files[0];
  if (!file) {
    $("doc-status").textContent = "Pick a .txt or .md file first.";
    return;
  }
  $("doc-status").textContent = `Uploading ${file.name}…`;
  $("doc-upload").disabled = true;
  try {
    const done = await withKey(() => upload("/v1/create/rag", file));
    $("doc-status").textContent = `${done.filename}: ${done.points} chunk${done.points === 1 ? "" : "s"} stored.`;
    $("doc-file").value = "";
  } catch (e) {
    $("doc-status").textContent = describe(e);
  } finally {
    $("doc-upload").disabled = false;
    refreshDocs();
  }
}

async function deleteDoc(f) {
  try {
    await withKey(() => del(`/v1/files/${encodeURIComponent(f.id)}`));
    $("doc-status").textContent = `${f.filename} deleted.`;
  } catch (e) {
    $("doc-status").textContent = describe(e);
  }
  refreshDocs();
}

// ---- layout ---------------------------------------------------------------------------------

function openSidebar() {
  document.body.classList.add("sidebar-open");
  $("scrim").hidden = false;
}

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  $("scrim").hidden = true;
}

function wire() {
  $("composer").addEventListener("submit", (ev) => { ev.preventDefault(); submit(); });
  $("input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      submit();
    }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && state.running) {
      ev.preventDefault();
      stop();
    }
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newChat);
  $("rename").addEventListener("click", rename);
  $("export").addEventListener("click", exportConversation);
  $("delete").addEventListener("click", deleteConversation);
  $("toggle-settings").addEventListener("click", () => {
    const s = $("settings");
    s.hidden = !s.hidden;
    $("toggle-settings").setAttribute("aria-expanded", String(!s.hidden));
  });
  for (const id of ["model", "system", "rag", "tools", "tool_choice", ...PARAMS]) {
    $(id).addEventListener("change", () => {
      readSettings();
      if (id === "model") showDefaults();
      if (id === "tools") {
        try {
          parseTools($("tools").value);
          $("tools-error").textContent = "";
        } catch (e) {
          $("tools-error").textContent = e.message;
        }
      }
    });
  }
  $("open-sidebar").addEventListener("click", openSidebar);
  $("close-sidebar").addEventListener("click", closeSidebar);
  $("scrim").addEventListener("click", closeSidebar);
  $("doc-upload").addEventListener("click", uploadDoc);
  // Copy buttons of code blocks (made by the Markdown renderer).
  $("messages").addEventListener("click", (ev) => {
    const b = ev.target.closest("button.copy-code");
    if (b) copyText(b.dataset.copy || "", b);
  });
}

async function main() {
  wire();
  for (;;) {
    try {
      await loadModels();
      showBanner("");
      break;
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 503) {
        showBanner(`${describe(e)} (reload the page to try again)`);
        break;
      }
      // Models still loading (or the server draining): say so and ask again shortly.
      showBanner(`${describe(e)} Trying again…`);
      await new Promise((resolve) => { setTimeout(resolve, 2000); });
    }
  }
  const saved = state.conversations.find((c) => c.id === store.activeId());
  if (saved) select(saved);
  else if (state.conversations.length) select(state.conversations[0]);
  else newChat();
  document.body.dataset.ready = "true";  // the page is wired and has its models
  refreshDocs();
}

main();
