"""Tokenizer backends: the `Backend` protocol that `Tokenizer` wraps, and its two runners.

- `TokenizersBackend` runs a `tokenizers.Tokenizer` (HF tokenizer.json or one rebuilt from GGUF);
- `SentencePieceBackend` runs a sentencepiece tokenizer.model plus tokenizer_config's added tokens.
Also here: how a vocabulary piece maps to bytes (GPT-2's byte-level alphabet, sentencepiece's
<0xNN> byte pieces and '▁' metaspace) and the BOS/EOS post-processor for `tokenizers`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import tokenizers
from tokenizers import processors

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


def set_template_processor(tok: tokenizers.Tokenizer, bos: tuple[str, int] | None,
                           eos: tuple[str, int] | None) -> None:
    """Make `tok` add exactly these BOS / EOS tokens (None: that one is not added)."""
    head, tail = ([bos[0]] if bos else []), ([eos[0]] if eos else [])
    tok.post_processor = processors.TemplateProcessing(
        single=[*head, "$A", *tail], pair=[*head, "$A", *tail, *head, "$B:1", *tail],
        special_tokens=[t for t in (bos, eos) if t])


# `tokenizers` holds the GIL through encode() and decode() but releases it in the batch
# calls: past this many characters (or ids) the batch form is used, so that a server thread
# tokenizing a huge prompt leaves the event loop free (same results either way).
LONG_TEXT = 4096


class Backend(Protocol):
    vocab_size: int

    def encode(self, text: str, add_special_tokens: bool) -> list[int]: ...
    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str: ...
    def id_to_token(self, token_id: int) -> str | None: ...
    def token_to_id(self, token: str) -> int | None: ...
    def token_bytes(self, token_id: int) -> bytes: ...
    def special_ids(self) -> set[int]: ...


class TokenizersBackend:
    """A `tokenizers.Tokenizer`; `kind` says how vocab pieces map to bytes."""

    def __init__(self, tok: tokenizers.Tokenizer, kind: str, pieces: list[str] | None = None):
        self.tok = tok
        self.kind = kind  # "byte_level", "metaspace" or "other"
        self._pieces = pieces  # GGUF order, which may hold duplicates the model dict drops
        self._added = {i: t.content for i, t in tok.get_added_tokens_decoder().items()}
        self.vocab_size = max(tok.get_vocab_size(with_added_tokens=True), len(pieces or ()))

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        if len(text) > LONG_TEXT:  # the batch call releases the GIL while it works
            return self.tok.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        if len(ids) > LONG_TEXT:
            return self.tok.decode_batch([list(ids)], skip_special_tokens=skip_special_tokens)[0]
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


class SentencePieceBackend:
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
