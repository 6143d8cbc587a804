// Markdown to DOM, for model output. Every piece of text becomes a Text node
// (textContent): nothing the model writes is ever parsed as HTML, so it cannot become live
// markup or script. Covers what chat models write: headings, paragraphs, fenced code,
// lists (nested by indentation), block quotes, tables, rules, and inline code, bold,
// italic, strike-through and http(s)/mailto links. An unclosed fence (a stream still
// arriving) renders as code so far.

import { highlight } from "./highlight.js";

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
const SAFE_URL = /^(https?:\/\/|mailto:)/i;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function isBlockStart(line, next) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) ||
    ITEM.test(line) || (line.includes("|") && next !== undefined && TABLE_SEP.test(next));
}

function splitRow(line) {
  let s = line.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
  return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function codeBlock(code, lang) {
  const wrap = el("div", "code-block");
  const head = el("div", "code-head");
  head.append(el("span", "code-lang", lang || "text"));
  const copy = el("button", "copy-code", "Copy");
  copy.type = "button";
  copy.dataset.copy = code;  // app.js copies it (one click handler for the whole page)
  head.append(copy);
  const pre = el("pre");
  const codeEl = el("code");
  if (lang) codeEl.dataset.lang = lang;
  codeEl.append(highlight(code, lang));
  pre.append(codeEl);
  wrap.append(head, pre);
  return wrap;
}

function list(lines, start) {
  // One list: items of the first item's kind at its indentation; deeper lines belong to
  // the item above them and are rendered as blocks (so nested lists nest).
  const first = ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const node = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  let i = start;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const body = [m[3]];
    i++;
    while (i < lines.length) {
      const line = lines[i];
      const deeper = line.length - line.trimStart().length > indent;
      if (line.trim() === "") {
        const next = lines[i + 1];
        if (next !== undefined && next.length - next.trimStart().length > indent) {
          body.push("");
          i++;
          continue;
        }
        break;
      }
      if (!deeper && (ITEM.test(line) || isBlockStart(line, lines[i + 1]))) break;
      body.push(deeper ? line.slice(Math.min(indent + 2, line.length - line.trimStart().length))
        : line);
      i++;
    }
    const li = el("li");
    const inner = blocks(body);
    // A one-paragraph item shows inline, without the paragraph's margins.
    if (inner.childNodes.length === 1 && inner.firstChild.nodeName === "P") {
      li.append(...inner.firstChild.childNodes);
    } else {
      li.append(inner);
    }
    node.append(li);
  }
  return [node, i];
}

function table(lines, start) {
  const head = splitRow(lines[start]);
  const node = el("table");
  const thead = el("thead");
  const tr = el("tr");
  for (const cell of head) {
    const th = el("th");
    inline(cell, th);
    tr.append(th);
  }
  thead.append(tr);
  node.append(thead);
  const tbody = el("tbody");
  let i = start + 2;
  while (i < lines.length && lines[i].includes("|") && lines[i].trim() !== "") {
    const row = el("tr");
    const cells = splitRow(lines[i]);
    for (let c = 0; c < head.length; c++) {
      const td = el("td");
      inline(cells[c] || "", td);
      row.append(td);
    }
    tbody.append(row);
    i++;
  }
  node.append(tbody);
  const wrap = el("div", "table-wrap");
  wrap.append(node);
  return [wrap, i];
}

function blocks(lines) {
  const out = document.createDocumentFragment();
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "") { i++; continue; }
    let m = FENCE.exec(line);
    if (m) {
      const marker = m[1];
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(marker)) body.push(lines[i++]);
      i++;  // the closing fence (or past the end while a stream is still coming)
      out.append(codeBlock(body.join("\n"), m[2].toLowerCase()));
      continue;
    }
    if ((m = HEADING.exec(line))) {
      const h = el(`h${m[1].length}`);
      inline(m[2], h);
      out.append(h);
      i++;
      continue;
    }
    if (RULE.test(line)) { out.append(el("hr")); i++; continue; }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) body.push(QUOTE.exec(lines[i++])[1]);
      const q = el("blockquote");
      q.append(blocks(body));
      out.append(q);
      continue;
    }
    if (ITEM.test(line)) {
      const [node, next] = list(lines, i);
      out.append(node);
      i = next;
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1])) {
      const [node, next] = table(lines, i);
      out.append(node);
      i = next;
      continue;
    }
    const para = [line];
    i++;
    while (i < lines.length && lines[i].trim() !== "" && !isBlockStart(lines[i], lines[i + 1])) {
      para.push(lines[i++]);
    }
    const p = el("p");
    para.forEach((text, k) => {
      if (k > 0) p.append(el("br"));
      inline(text.trim(), p);
    });
    out.append(p);
  }
  return out;
}

// Inline spans, earliest match first; the text between matches stays text.
const INLINE = [
  { re: /`([^`\n]+)`/, make: (m) => el("code", "", m[1]) },
  { re: /\*\*(?=\S)([\s\S]*?\S)\*\*/, make: (m) => nest("strong", m[1]) },
  { re: /__(?=\S)([\s\S]*?\S)__/, make: (m) => nest("strong", m[1]) },
  { re: /~~(?=\S)([\s\S]*?\S)~~/, make: (m) => nest("del", m[1]) },
  { re: /\*(?=[^\s*])([^*]*?[^\s*])\*/, make: (m) => nest("em", m[1]) },
  { re: /(?<![\w])_(?=[^\s_])([^_]*?[^\s_])_(?![\w])/, make: (m) => nest("em", m[1]) },
  { re: /\[([^\]\n]+)\]\(\s*<?([^)\s>]+)>?\s*\)/, make: link },
];

function nest(tag, text) {
  const node = el(tag);
  inline(text, node);
  return node;
}

function link(m) {
  const url = m[2];
  if (!SAFE_URL.test(url)) return document.createTextNode(m[0]);  // javascript: and the like
  const a = el("a");
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  inline(m[1], a);
  return a;
}

export function inline(text, parent) {
  let rest = text;
  while (rest) {
    let best = null;
    for (const rule of INLINE) {
      const m = rule.re.exec(rest);
      if (m && (best === null || m.index < best.m.index)) best = { m, rule };
    }
    if (best === null) {
      parent.append(document.createTextNode(rest));
      return;
    }
    if (best.m.index > 0) parent.append(document.createTextNode(rest.slice(0, best.m.index)));
    parent.append(best.rule.make(best.m));
    rest = rest.slice(best.m.index + best.m[0].length);
  }
}

export function renderMarkdown(text) {
  return blocks(String(text).replace(/\r\n?/g, "\n").split("\n"));
}
