"""Tokenizer: one interface over HF `tokenizers`, `sentencepiece` and GGUF vocabularies.

Three sources are supported:
- an HF folder with tokenizer.json (any model the `tokenizers` library runs);
- an HF folder with only a sentencepiece tokenizer.model (run by `sentencepiece` itself);
- GGUF metadata: `gpt2` (byte-level BPE) and `llama` (sentencepiece-style BPE with byte
  fallback) vocabularies, rebuilt as `tokenizers` models that tokenize the way llama.cpp does.
Special tokens written in the text (e.g. "<|im_start|>") are always matched whole.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

logger = logging.getLogger(__name__)

# GGUF token types (llama.cpp's llama_token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = _LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")

# llama.cpp's `tokenizer.ggml.pre` names -> (split regexes applied in order, ignore_merges,
# add_bos default). Each regex isolates its matches inside the pieces left by the previous one,
# which is how llama.cpp's unicode_regex_split chains them.
_PRE_TYPES: tuple[tuple[tuple[str, ...], tuple[str, ...], bool, bool], ...] = (
    (("gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4",
      "roberta-bpe", "jina-es", "jina-de", "jina-v1-en", "jina-v2-es", "jina-v2-de",
      "jina-v2-code", "gigachat", "a.x-4.0", "mellum", "modern-bert"),
     (_GPT2_REGEX,), False, False),
    (("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"),
     (r"\p{N}", _GPT2_REGEX), False, False),
    (("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"),
     (_LLAMA3_REGEX,), True, True),
    (("dbrx", "smaug-bpe", "glm4", "chatglm-bpe"), (_LLAMA3_REGEX,), False, False),
    (("qwen2", "deepseek-r1-qwen", "stablelm2", "hunyuan", "megrez", "solar-open", "kormo"),
     (_QWEN2_REGEX,), False, False),
    (("falcon",), (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2_REGEX, r"[0-9][0-9][0-9]"), False, False),
    (("default",),
     (r"[\p{P}\$\+<=>\^~\|]+", _GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]"), False, False),
)

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.lru_cache(maxsize=1)
def _gpt2_char_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte->printable-char map used by byte-level BPE vocabularies."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            mapping[chr(256 + extra)] = b
            extra += 1
    return mapping


def _byte_level_bytes(piece: str) -> bytes | None:
    """Bytes of a byte-level BPE piece, or None when it is not in the byte-mapped alphabet."""
    table = _gpt2_char_to_byte()
    if not all(c in table for c in piece):
        return None
    return bytes(table[c] for c in piece)


def _metaspace_bytes(piece: str) -> bytes:
    """Bytes of a sentencepiece piece: <0xNN> byte tokens, '▁' stands for a space."""
    match = _BYTE_PIECE.fullmatch(piece)
    if match:
        return bytes([int(match.group(1), 16)])
    return piece.replace("\u2581", " ").encode("utf-8")


class _Backend(Protocol):
    vocab_size: int

    def encode(self, text: str, add_special_tokens: bool) -> list[int]: ...
    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str: ...
    def id_to_token(self, token_id: int) -> str | None: ...
    def token_to_id(self, token: str) -> int | None: ...
    def token_bytes(self, token_id: int) -> bytes: ...
    def special_ids(self) -> set[int]: ...


class _TokenizersBackend:
    """A `tokenizers.Tokenizer`; `kind` says how vocab pieces map to bytes."""

    def __init__(self, tok: tokenizers.Tokenizer, kind: str, pieces: list[str] | None = None):
        self.tok = tok
        self.kind = kind  # "byte_level", "metaspace" or "other"
        self._pieces = pieces  # GGUF order, which may hold duplicates the model dict drops
        self._added = {i: t.content for i, t in tok.get_added_tokens_decoder().items()}
        self.vocab_size = max(tok.get_vocab_size(with_added_tokens=True), len(pieces or ()))

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        if self._pieces is not None and 0 <= token_id < len(self._pieces):
            return self._pieces[token_id]
        return self.tok.id_to_token(token_id)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self._added:
            return self._added[token_id].encode("utf-8")
        piece = self.id_to_token(token_id) or ""
        if self.kind == "byte_level":
            raw = _byte_level_bytes(piece)
            return raw if raw is not None else piece.encode("utf-8")
        if self.kind == "metaspace":
            return _metaspace_bytes(piece)
        return self.decode([token_id], skip_special_tokens=False).encode("utf-8")

    def special_ids(self) -> set[int]:
        return {i for i, t in self.tok.get_added_tokens_decoder().items() if t.special}


class _SentencePieceBackend:
    """A sentencepiece model plus the added tokens of tokenizer_config.json."""

    def __init__(self, path: Path, added: dict[int, tuple[str, bool]], add_bos: bool,
                 bos_token: str | None):
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        size = self.sp.get_piece_size()
        self._special = {i for i in range(size) if self.sp.is_control(i) or self.sp.is_unknown(i)}
        self._special |= {i for i, (_, special) in added.items() if special}
        # Tokens matched whole in text: control pieces and everything tokenizer_config adds.
        self._whole = {self.sp.id_to_piece(i): i for i in self._special if i < size}
        self._whole.update({content: i for i, (content, _) in added.items()})
        self._added_content = {i: content for i, (content, _) in added.items()}
        self._splitter = _whole_token_regex(self._whole)
        self.vocab_size = max([size, *(i + 1 for i in added)])
        bos_id = self.token_to_id(bos_token) if bos_token is not None else None
        self._bos = [bos_id] if add_bos and bos_id is not None else []

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        ids = list(self._bos) if add_special_tokens else []
        parts = self._splitter.split(text) if self._splitter else [text]
        for part in parts:
            if part in self._whole:
                ids.append(self._whole[part])
            elif part:
                # Each raw segment gets sentencepiece's dummy prefix, as llama.cpp and HF's
                # legacy Llama tokenizer do after a special token.
                ids.extend(self.sp.encode(part))
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        out: list[str] = []
        run: list[int] = []
        for token_id in ids:
            if token_id in self._special or token_id in self._added_content:
                out.append(self.sp.decode(run))
                run = []
                if not (skip_special_tokens and token_id in self._special):
                    out.append(self.id_to_token(token_id) or "")
            else:
                run.append(token_id)
        out.append(self.sp.decode(run))
        return "".join(out)

    def id_to_token(self, token_id: int) -> str | None:
        if token_id in self._added_content:
            return self._added_content[token_id]
        if 0 <= token_id < self.sp.get_piece_size():
            return self.sp.id_to_piece(token_id)
        return None

    def token_to_id(self, token: str) -> int | None:
        if token in self._whole:
            return self._whole[token]
        token_id = self.sp.piece_to_id(token)
        # sentencepiece answers unk_id for unknown pieces.
        return token_id if self.sp.id_to_piece(token_id) == token else None

    def token_bytes(self, token_id: int) -> bytes:
        piece = self.id_to_token(token_id) or ""
        if token_id in self._special or token_id in self._added_content:
            return piece.encode("utf-8")
        return _metaspace_bytes(piece)

    def special_ids(self) -> set[int]:
        return set(self._special)


def _whole_token_regex(tokens: Iterable[str]) -> re.Pattern[str] | None:
    """A splitting regex (longest token first) that keeps the matched special tokens."""
    ordered = sorted((t for t in tokens if t), key=len, reverse=True)
    if not ordered:
        return None
    return re.compile("(" + "|".join(re.escape(t) for t in ordered) + ")")


class Tokenizer:
    """Text <-> token ids, plus the special-token facts the engine and the server need.

    Attributes: vocab_size; bos_token / bos_token_id, eos_token / eos_token_id, pad_token_id
    (None when the model has none); add_bos_token (whether encode(..., add_special_tokens=True)
    prepends BOS); chat_template (Jinja source or None); all_special_ids (control and special
    added tokens, which decode(..., skip_special_tokens=True) drops).
    Build one with `from_dir` or `from_gguf_metadata`.
    """

    def __init__(self, backend: _Backend, *, bos: tuple[str, int] | None,
                 eos: tuple[str, int] | None, pad_token_id: int | None,
                 chat_template: str | None, extra_special_ids: Iterable[int] = ()) -> None:
        self._backend = backend
        self.vocab_size: int = backend.vocab_size
        self.bos_token, self.bos_token_id = bos if bos else (None, None)
        self.eos_token, self.eos_token_id = eos if eos else (None, None)
        self.pad_token_id: int | None = pad_token_id
        self.chat_template: str | None = chat_template
        # The backend decides (post-processor / config); read the answer back rather than guess.
        probe = backend.encode("", add_special_tokens=True)
        self.add_bos_token: bool = self.bos_token_id is not None and probe[:1] == [
            self.bos_token_id]
        named = {i for i in (self.bos_token_id, self.eos_token_id, self.pad_token_id) if i is not None}
        self.all_special_ids: frozenset[int] = frozenset(
            backend.special_ids() | set(extra_special_ids) | named)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        return self._backend.encode(text, add_special_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]  # numpy / torch integers are welcome too
        for token_id in ids:
            self._check_id(token_id)
        return self._backend.decode(ids, skip_special_tokens)

    def id_to_token(self, token_id: int) -> str:
        self._check_id(token_id)
        piece = self._backend.id_to_token(token_id)
        if piece is None:
            raise ValueError(f"token id {token_id} has no vocabulary entry")
        return piece

    def token_bytes(self, token_id: int) -> bytes:
        self._check_id(token_id)
        return self._backend.token_bytes(token_id)

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside the vocabulary [0, {self.vocab_size})")

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"tokenizer folder {root} does not exist")
        config = _read_json(root / "tokenizer_config.json")
        # Like transformers, special_tokens_map.json overrides tokenizer_config.json.
        named = {**config, **_read_json(root / "special_tokens_map.json")}
        bos, eos, pad = (_token_content(named.get(k)) for k in ("bos_token", "eos_token", "pad_token"))
        added = _config_added_tokens(config, root)
        if (root / "tokenizer.json").is_file():
            backend: _Backend = _hf_json_backend(root / "tokenizer.json", config, added, bos, eos)
        elif (root / "tokenizer.model").is_file():
            # HF's Llama tokenizer adds BOS unless the config says otherwise.
            backend = _SentencePieceBackend(root / "tokenizer.model", added,
                                            bool(config.get("add_bos_token", True)), bos)
        else:
            raise FileNotFoundError(f"{root} has neither tokenizer.json nor tokenizer.model")
        pad_id = backend.token_to_id(pad) if pad is not None else None
        if pad is not None and pad_id is None:  # padding is optional; do not refuse the model
            logger.warning("%s: pad token %r is not in the vocabulary; ignoring it", root, pad)
        return cls(backend, bos=_named(backend, bos, root), eos=_named(backend, eos, root),
                   pad_token_id=pad_id, chat_template=_dir_chat_template(root, config))

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any]) -> Tokenizer:
        model = meta.get("tokenizer.ggml.model")
        tokens = list(meta.get("tokenizer.ggml.tokens") or [])
        if not tokens:
            raise ValueError("GGUF metadata has no tokenizer.ggml.tokens")
        types = list(meta.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens))
        if len(types) != len(tokens):
            raise ValueError("GGUF tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length")
        if model == "gpt2":
            backend, add_bos_default = _gguf_bpe(meta, tokens, types)
        elif model == "llama":
            backend, add_bos_default = _gguf_spm(meta, tokens, types), True
        else:
            raise ValueError(f"unsupported GGUF tokenizer model {model!r} (supported: gpt2, llama)")
        bos, eos = _gguf_token(meta, tokens, "bos"), _gguf_token(meta, tokens, "eos")
        add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default))
        add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
        _set_template_processor(backend.tok, bos if add_bos else None, eos if add_eos else None)
        pad = _gguf_token(meta, tokens, "padding")
        return cls(backend, bos=bos, eos=eos, pad_token_id=pad[1] if pad else None,
                   chat_template=meta.get("tokenizer.chat_template"),
                   extra_special_ids=(i for i, t in enumerate(types) if t in (_CONTROL, _UNKNOWN)))


# --- HF folders ------------------------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        return data
    raise ValueError(f"{path} must hold a JSON object")


def _token_content(value: Any) -> str | None:
    """tokenizer_config writes a special token as a string or as a serialized AddedToken."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"cannot read a special token from {value!r}")


def _config_added_tokens(config: dict[str, Any], root: Path) -> dict[int, tuple[str, bool]]:
    """tokenizer_config.json's added_tokens_decoder as {id: (content, special)}."""
    added: dict[int, tuple[str, bool]] = {}
    for key, entry in (config.get("added_tokens_decoder") or {}).items():
        content = entry.get("content") if isinstance(entry, dict) else None
        if content is None or not str(key).isdigit():
            raise ValueError(f"{root / 'tokenizer_config.json'}: bad added token {key!r}")
        added[int(key)] = (str(content), bool(entry.get("special", False)))
    return added


def _dir_chat_template(root: Path, config: dict[str, Any]) -> str | None:
    jinja_file = root / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template") or _read_json(root / "chat_template.json").get(
        "chat_template")
    if isinstance(template, list):  # named templates: HF uses the one called "default"
        by_name = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = by_name.get("default", next(iter(by_name.values()), None))
    if template is not None and not isinstance(template, str):
        raise ValueError(f"{root}: chat_template must be a string")
    return template


def _hf_json_backend(path: Path, config: dict[str, Any], added: dict[int, tuple[str, bool]],
                     bos: str | None, eos: str | None) -> _TokenizersBackend:
    try:
        tok = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a bare Exception
        raise ValueError(f"cannot load {path}: {exc}") from exc
    # Some tokenizer.json files pad/truncate (all-MiniLM pads to 128); callers want raw ids.
    tok.no_padding()
    tok.no_truncation()
    for token_id, (content, special) in sorted(added.items()):
        new = AddedToken(content, special=special, normalized=False)
        (tok.add_special_tokens if special else tok.add_tokens)([new])
        if tok.token_to_id(content) != token_id:
            raise ValueError(f"{path}: added token {content!r} should have id {token_id}, "
                             f"got {tok.token_to_id(content)}")
    _apply_config_bos_eos(tok, config, bos, eos)
    state = tok.decoder.__getstate__().decode() if tok.decoder is not None else ""
    kind = "byte_level" if '"ByteLevel"' in state else (
        "metaspace" if "ByteFallback" in state or "\u2581" in state or "Metaspace" in state
        else "other")
    return _TokenizersBackend(tok, kind)


def _apply_config_bos_eos(tok: tokenizers.Tokenizer, config: dict[str, Any], bos: str | None,
                          eos: str | None) -> None:
    """Make the post-processor honour an explicit add_bos_token / add_eos_token."""
    if "add_bos_token" not in config and "add_eos_token" not in config:
        return
    plain, full = (tok.encode("", add_special_tokens=f).ids for f in (False, True))
    bos_id, eos_id = (tok.token_to_id(t) if t else None for t in (bos, eos))
    adds_bos = bos_id is not None and full[:1] == [bos_id] and len(full) > len(plain)
    adds_eos = eos_id is not None and full[-1:] == [eos_id] and len(full) > len(plain)
    want_bos = bool(config.get("add_bos_token", adds_bos)) and bos_id is not None
    want_eos = bool(config.get("add_eos_token", adds_eos)) and eos_id is not None
    if (want_bos, want_eos) != (adds_bos, adds_eos):
        _set_template_processor(tok, (bos, bos_id) if want_bos else None,  # type: ignore[arg-type]
                                (eos, eos_id) if want_eos else None)  # type: ignore[arg-type]


def _named(backend: _Backend, token: str | None, root: Path) -> tuple[str, int] | None:
    if token is None:
        return None
    token_id = backend.token_to_id(token)
    if token_id is None:
        raise ValueError(f"{root}: special token {token!r} is not in the vocabulary")
    return token, token_id


# --- GGUF ------------------------------------------------------------------------------------

def _set_template_processor(tok: tokenizers.Tokenizer, bos: tuple[str, int] | None,
                            eos: tuple[str, int] | None) -> None:
    head, tail = ([bos[0]] if bos else []), ([eos[0]] if eos else [])
    tok.post_processor = processors.TemplateProcessing(
        single=[*head, "$A", *tail], pair=[*head, "$A", *tail, *head, "$B:1", *tail],
        special_tokens=[t for t in (bos, eos) if t])


def _gguf_token(meta: dict[str, Any], tokens: list[str], name: str) -> tuple[str, int] | None:
    token_id = meta.get(f"tokenizer.ggml.{name}_token_id")
    if token_id is None:
        return None
    if not 0 <= int(token_id) < len(tokens):
        raise ValueError(f"GGUF tokenizer.ggml.{name}_token_id {token_id} is out of range")
    return tokens[int(token_id)], int(token_id)


def _first_ids(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)  # some vocabularies repeat a piece; keep its first id
    return vocab


def _pre_type(pre: str) -> tuple[tuple[str, ...], bool, bool]:
    for names, regexes, ignore_merges, add_bos in _PRE_TYPES:
        if pre in names:
            return regexes, ignore_merges, add_bos
    known = sorted(n for names, *_ in _PRE_TYPES for n in names)
    raise ValueError(f"unsupported GGUF pre-tokenizer {pre!r}; supported: {', '.join(known)}")


def _register_gguf_specials(tok: tokenizers.Tokenizer, tokens: list[str], types: list[int]) -> None:
    """Control/unknown pieces become special added tokens, user-defined ones plain added tokens;
    either way they are matched whole in the text, as llama.cpp does."""
    special = [AddedToken(t, special=True, normalized=False)
               for t, kind in zip(tokens, types) if kind in (_CONTROL, _UNKNOWN) and t]
    user = [AddedToken(t, special=False, normalized=False)
            for t, kind in zip(tokens, types) if kind == _USER_DEFINED and t]
    tok.add_special_tokens(special)
    tok.add_tokens(user)


def _gguf_bpe(meta: dict[str, Any], tokens: list[str],
              types: list[int]) -> tuple[_TokenizersBackend, bool]:
    pre = meta.get("tokenizer.ggml.pre")
    if not pre:
        logger.warning("GGUF has no tokenizer.ggml.pre; using llama.cpp's 'default' pre-tokenizer")
        pre = "default"
    regexes, ignore_merges, add_bos_default = _pre_type(str(pre))
    merges = []
    for merge in meta.get("tokenizer.ggml.merges") or []:
        parts = merge.split(" ")
        if len(parts) != 2:
            raise ValueError(f"GGUF merge {merge!r} is not two space-separated pieces")
        merges.append((parts[0], parts[1]))
    try:
        model = models.BPE(vocab=_first_ids(tokens), merges=merges, ignore_merges=ignore_merges)
    except Exception as exc:  # the Rust side raises a bare Exception
        raise ValueError(f"GGUF BPE vocabulary is inconsistent: {exc}") from exc
    tok = tokenizers.Tokenizer(model)
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    _register_gguf_specials(tok, tokens, types)
    return _TokenizersBackend(tok, "byte_level", tokens), add_bos_default


def _merges_from_scores(tokens: list[str], types: list[int],
                        scores: Sequence[float]) -> list[tuple[str, str]]:
    """BPE merges equivalent to sentencepiece's rule 'merge the pair whose union scores best'."""
    normal = {t: i for i, t in reversed(list(enumerate(tokens))) if types[i] == _NORMAL}
    ranked = []
    for merged, i in normal.items():
        for cut in range(1, len(merged)):
            left, right = merged[:cut], merged[cut:]
            if left in normal and right in normal:
                ranked.append((-float(scores[i]), i, cut, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _gguf_spm(meta: dict[str, Any], tokens: list[str], types: list[int]) -> _TokenizersBackend:
    scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    if len(scores) != len(tokens):
        raise ValueError("GGUF tokenizer.ggml.scores and tokenizer.ggml.tokens differ in length")
    unk = _gguf_token(meta, tokens, "unknown")
    model = models.BPE(vocab=_first_ids(tokens), merges=_merges_from_scores(tokens, types, scores),
                       unk_token=unk[0] if unk else None, fuse_unk=True,
                       byte_fallback=_BYTE in types)
    tok = tokenizers.Tokenizer(model)
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    # llama.cpp escapes spaces as '▁' and adds a space prefix to every raw text fragment.
    steps = [normalizers.Prepend("\u2581")] if prefix else []
    tok.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "\u2581")])
    strip = [decoders.Strip(" ", 1, 0)] if prefix else []
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), *strip])
    _register_gguf_specials(tok, tokens, types)
    return _TokenizersBackend(tok, "metaspace", tokens)
