// Conversations, kept in this browser's localStorage (nothing is stored on the server).

const STORE = "engine-chat/conversations/v1";
const ACTIVE = "engine-chat/active";

export function newConversation(model) {
  return {
    id: (crypto.randomUUID ? crypto.randomUUID() : `c${Date.now()}${Math.random()}`),
    title: "New chat",
    renamed: false,
    created: Date.now(),
    updated: Date.now(),
    model: model || "",
    system: "",
    params: { temperature: "", top_p: "", max_tokens: "", seed: "" },
    rag: false,
    tools: "",
    tool_choice: "auto",
    messages: [],
  };
}

export function load() {
  try {
    const list = JSON.parse(localStorage.getItem(STORE) || "[]");
    return Array.isArray(list) ? list.filter((c) => c && Array.isArray(c.messages)) : [];
  } catch (_) {
    return [];  // a damaged store starts empty rather than breaking the page
  }
}

// Throws on a full store (the caller says so); the rest of the page keeps working.
export function save(conversations) {
  localStorage.setItem(STORE, JSON.stringify(conversations));
}

export function activeId() {
  return localStorage.getItem(ACTIVE);
}

export function setActiveId(id) {
  localStorage.setItem(ACTIVE, id);
}

export function exportJson(conv) {
  const { id, title, created, updated, model, system, params, rag, tools, messages } = conv;
  return JSON.stringify({
    format: "engine-chat-conversation", version: 1, id, title, created, updated, model,
    system, params, rag, tools: parsedTools(tools), tool_choice: conv.tool_choice, messages,
  }, null, 2);
}

function parsedTools(text) {
  if (!text || !text.trim()) return null;
  try {
    return JSON.parse(text);
  } catch (_) {
    return text;  // kept as typed: the export must not fail on a draft
  }
}
