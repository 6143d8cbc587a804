// A small syntax highlighter: comments, strings, numbers and keywords of the languages chat
// models write most, as <span class="tok-..."> around Text nodes (never HTML).

const C_LIKE = "break case catch class const continue default do else enum export extends " +
  "false final finally for if import in instanceof new null private protected public " +
  "return static struct super switch this throw true try typeof var void while";
const LANGS = {
  python: {
    comment: ["#"],
    strings: ["'''", '"""', "'", '"'],
    keywords: "and as assert async await break class continue def del elif else except " +
      "False finally for from global if import in is lambda None nonlocal not or pass " +
      "raise return True try while with yield self print len range",
  },
  javascript: {
    comment: ["//"], block: ["/*", "*/"], strings: ["'", '"', "`"],
    keywords: C_LIKE + " async await function let of undefined yield console",
  },
  c: {
    comment: ["//"], block: ["/*", "*/"], strings: ['"', "'"],
    keywords: C_LIKE + " auto char double float int long short signed sizeof typedef " +
      "union unsigned bool include define std cout endl namespace using template " +
      "virtual boolean string String System package interface implements",
  },
  rust: {
    comment: ["//"], block: ["/*", "*/"], strings: ['"'],
    keywords: "as async await break const continue crate else enum extern false fn for if " +
      "impl in let loop match mod move mut pub ref return self Self static struct super " +
      "trait true type unsafe use where while i32 i64 u8 u32 u64 usize f32 f64 bool str " +
      "String Vec Option Some None Result Ok Err println",
  },
  go: {
    comment: ["//"], block: ["/*", "*/"], strings: ['"', "`", "'"],
    keywords: "break case chan const continue default defer else fallthrough for func go " +
      "goto if import interface map package range return select struct switch type var " +
      "nil true false int string error bool byte float64 fmt",
  },
  shell: {
    comment: ["#"], strings: ["'", '"'],
    keywords: "if then else elif fi for while do done case esac function in return export " +
      "local echo cd set unset source exit sudo pip python curl apt-get",
  },
  sql: {
    comment: ["--"], block: ["/*", "*/"], strings: ["'", '"'],
    keywords: "select from where and or not insert into values update set delete create " +
      "table drop alter join left right inner outer on group by order having limit as " +
      "distinct null is in like primary key index count sum avg min max",
    caseless: true,
  },
  json: { strings: ['"'], keywords: "true false null" },
};
const ALIASES = {
  py: "python", python3: "python", js: "javascript", ts: "javascript",
  typescript: "javascript", jsx: "javascript", tsx: "javascript", java: "c", cpp: "c",
  "c++": "c", cc: "c", h: "c", cs: "c", csharp: "c", kotlin: "c", swift: "c", rs: "rust",
  golang: "go", sh: "shell", bash: "shell", zsh: "shell", console: "shell",
  yaml: "shell", yml: "shell", toml: "shell",
};

function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

const compiled = new Map();

function tokenizer(name) {
  if (compiled.has(name)) return compiled.get(name);
  const lang = LANGS[name];
  const parts = [];
  if (lang.block) {
    parts.push(`(?<comment>${escapeRe(lang.block[0])}[\\s\\S]*?(?:${escapeRe(lang.block[1])}|$))`);
  }
  if (lang.comment) parts.push(`(?<line>(?:${lang.comment.map(escapeRe).join("|")})[^\\n]*)`);
  const strings = lang.strings.map((q) => {
    const e = escapeRe(q);
    return q.length === 3 ? `${e}[\\s\\S]*?(?:${e}|$)` : `${e}(?:\\\\[\\s\\S]|(?!${e})[^\\\\\\n])*(?:${e}|$)`;
  });
  parts.push(`(?<string>${strings.join("|")})`);
  parts.push("(?<number>\\b(?:0x[0-9a-fA-F]+|\\d+(?:\\.\\d+)?(?:[eE][+-]?\\d+)?)\\b)");
  parts.push("(?<word>[A-Za-z_][\\w]*)");
  const words = new Set(lang.keywords.split(/\s+/).map((w) => (lang.caseless ? w.toLowerCase() : w)));
  const result = { re: new RegExp(parts.join("|"), "g"), words, caseless: !!lang.caseless };
  compiled.set(name, result);
  return result;
}

function span(kind, text) {
  const node = document.createElement("span");
  node.className = `tok-${kind}`;
  node.textContent = text;
  return node;
}

export function highlight(code, lang) {
  const out = document.createDocumentFragment();
  const name = ALIASES[lang] || lang;
  if (!LANGS[name]) {
    out.append(document.createTextNode(code));
    return out;
  }
  const { re, words, caseless } = tokenizer(name);
  re.lastIndex = 0;
  let last = 0;
  let m;
  while ((m = re.exec(code)) !== null) {
    if (m[0] === "") { re.lastIndex++; continue; }
    const g = m.groups;
    let kind = null;
    if (g.comment !== undefined || g.line !== undefined) kind = "comment";
    else if (g.string !== undefined) kind = "string";
    else if (g.number !== undefined) kind = "number";
    else if (words.has(caseless ? m[0].toLowerCase() : m[0])) kind = "keyword";
    if (kind === null) continue;  // a plain identifier stays in the text run
    if (m.index > last) out.append(document.createTextNode(code.slice(last, m.index)));
    out.append(span(kind, m[0]));
    last = m.index + m[0].length;
  }
  if (last < code.length) out.append(document.createTextNode(code.slice(last)));
  return out;
}
