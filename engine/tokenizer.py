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
                 bos_id: int | None):
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
        self.add_bos, self.bos_id = add_bos, bos_id
        self.vocab_size = max([size, *(i + 1 for i in added)])

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        ids: list[int] = [self.bos_id] if add_special_tokens and self.add_bos and \
            self.bos_id is not None else []
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
        return None if token_id == self.sp.unk_id() and token != self.sp.id_to_piece(
            token_id) else token_id

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


