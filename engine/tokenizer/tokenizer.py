"""Tokenizer: one interface over HF `tokenizers`, `sentencepiece` and GGUF vocabularies.

Three sources are supported:
- an HF folder with tokenizer.json (any model the `tokenizers` library runs);
- an HF folder with only a sentencepiece tokenizer.model (run by `sentencepiece` itself);
- GGUF metadata: `gpt2` (byte-level BPE) and `llama` (sentencepiece-style BPE with byte
  fallback) vocabularies, rebuilt as `tokenizers` models that tokenize the way llama.cpp does.
Special tokens written in the text (e.g. "<|im_start|>") are always matched whole.
The backends live in tokenizer_backends, folder reading in tokenizer_hf, GGUF in tokenizer_gguf.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.json_file import read_json
from engine.tokenizer.backends import Backend, set_template_processor
from engine.tokenizer.gguf import gguf_backend, gguf_special_ids, gguf_token, gguf_vocab
from engine.tokenizer.hf import (
    dir_chat_template,
    hf_backend,
    named_token,
    special_token_names,
)

logger = logging.getLogger(__name__)


class Tokenizer:
    """Text <-> token ids, plus the special-token facts the engine and the server need.

    Attributes: vocab_size; bos_token / bos_token_id, eos_token / eos_token_id, pad_token_id
    (None when the model has none); add_bos_token (whether encode(..., add_special_tokens=True)
    prepends BOS); chat_template (Jinja source or None); all_special_ids (control and special
    added tokens, which decode(..., skip_special_tokens=True) drops).
    Build one with `from_dir` or `from_gguf_metadata`.
    """

    def __init__(self, backend: Backend, *, bos: tuple[str, int] | None,
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
        """From an HF folder: tokenizer.json, else a sentencepiece tokenizer.model."""
        root = Path(path)
        if not root.is_dir():
            raise FileNotFoundError(f"tokenizer folder {root} does not exist")
        config = read_json(root / "tokenizer_config.json")
        bos, eos, pad = special_token_names(root, config)
        backend = hf_backend(root, config, bos, eos)
        pad_id = backend.token_to_id(pad) if pad is not None else None
        if pad is not None and pad_id is None:  # padding is optional; do not refuse the model
            logger.warning("%s: pad token %r is not in the vocabulary; ignoring it", root, pad)
        return cls(backend, bos=named_token(backend, bos, root),
                   eos=named_token(backend, eos, root), pad_token_id=pad_id,
                   chat_template=dir_chat_template(root, config))

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any]) -> Tokenizer:
        """From GGUF key/values (at least the `tokenizer.*` ones, as gguf.GGUFReader reads them)."""
        tokens, types = gguf_vocab(meta)
        backend, add_bos_default = gguf_backend(meta, tokens, types)
        bos, eos = gguf_token(meta, tokens, "bos"), gguf_token(meta, tokens, "eos")
        add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default))
        add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
        set_template_processor(backend.tok, bos if add_bos else None, eos if add_eos else None)
        pad = gguf_token(meta, tokens, "padding")
        return cls(backend, bos=bos, eos=eos, pad_token_id=pad[1] if pad else None,
                   chat_template=meta.get("tokenizer.chat_template"),
                   extra_special_ids=gguf_special_ids(types))
