// Calls to this server's API: the key from sessionStorage, errors as ApiError with the
// server's own message, and streamed chat completions read as server-sent events.

const KEY_STORE = "engine-chat/api-key";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code || null;
  }

  describe() {
    const what = this.status === 401 ? "401 Unauthorized" : this.status ? `Error ${this.status}` : "Error";
    return `${what}: ${this.message}`;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

function headers(extra) {
  const out = { ...(extra || {}) };
  const key = apiKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function errorFrom(resp) {
  const text = await resp.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) {
      return new ApiError(resp.status, body.error.message, body.error.code);
    }
  } catch (_) { /* not JSON: say what came back */ }
  return new ApiError(resp.status, text.trim().slice(0, 300) || resp.statusText || "no message");
}

async function call(method, path, body, signal) {
  const init = { method, headers: headers(), signal };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, `The server could not be reached (${e.message})`);
  }
  if (!resp.ok) throw await errorFrom(resp);
  return resp;
}

export async function getJson(path) {
  return (await call("GET", path)).json();
}

export async function postJson(path, body) {
  return (await call("POST", path, body)).json();
}

export async function del(path) {
  return (await call("DELETE", path)).json();
}

export async function upload(path, file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return (await call("POST", path, form)).json();
}

// POST a streamed chat completion; onChunk(json) for each event. Resolves at [DONE] or when
// the stream ends; an error event (mid-stream) throws ApiError; abort() via `signal`.
export async function streamChat(body, signal, onChunk) {
  const resp = await call("POST", "/v1/chat/completions", body, signal);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const json = JSON.parse(data);
        if (json.error) throw new ApiError(json.error.status || 0, json.error.message, json.error.code);
        onChunk(json);
      }
    }
  }
}
