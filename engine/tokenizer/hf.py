"""Reading an HF tokenizer folder: the files `Tokenizer.from_dir` understands.

tokenizer_config.json and special_tokens_map.json (special token names, added tokens,
add_bos_token / add_eos_token), the chat template (chat_template.jinja, the config, or
chat_template.json), and the backend: tokenizer.json, else a sentencepiece tokenizer.model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken

from engine.json_file import read_json
from engine.tokenizer.backends import (
    Backend,
    SentencePieceBackend,
    TokenizersBackend,
    set_template_processor,
)


def special_token_names(root: Path,
                        config: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(bos, eos, pad) token strings; like transformers, special_tokens_map.json overrides
    tokenizer_config.json."""
    named = {**config, **read_json(root / "special_tokens_map.json")}
    bos, eos, pad = (_token_content(named.get(k)) for k in ("bos_token", "eos_token", "pad_token"))
    return bos, eos, pad


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


def dir_chat_template(root: Path, config: dict[str, Any]) -> str | None:
    """The folder's chat template: chat_template.jinja, else the config's, else
    chat_template.json's; of named templates, the one called "default" (as HF does)."""
    jinja_file = root / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template") or read_json(root / "chat_template.json").get(
        "chat_template")
    if isinstance(template, list):  # named templates: HF uses the one called "default"
        by_name = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = by_name.get("default", next(iter(by_name.values()), None))
    if template is not None and not isinstance(template, str):
        raise ValueError(f"{root}: chat_template must be a string")
    return template


def hf_backend(root: Path, config: dict[str, Any], bos: str | None,
               eos: str | None) -> Backend:
    """The folder's tokenizer.json (preferred) or sentencepiece tokenizer.model, with the
    config's added tokens and BOS/EOS settings applied."""
    added = _config_added_tokens(config, root)
    if (root / "tokenizer.json").is_file():
        return _hf_json_backend(root / "tokenizer.json", config, added, bos, eos)
    if (root / "tokenizer.model").is_file():
        # HF's Llama tokenizer adds BOS unless the config says otherwise.
        return SentencePieceBackend(root / "tokenizer.model", added,
                                    bool(config.get("add_bos_token", True)), bos)
    raise FileNotFoundError(f"{root} has neither tokenizer.json nor tokenizer.model")


def _hf_json_backend(path: Path, config: dict[str, Any], added: dict[int, tuple[str, bool]],
                     bos: str | None, eos: str | None) -> TokenizersBackend:
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
    return TokenizersBackend(tok, kind)


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
        set_template_processor(tok, (bos, bos_id) if want_bos else None,  # type: ignore[arg-type]
                               (eos, eos_id) if want_eos else None)  # type: ignore[arg-type]


def named_token(backend: Backend, token: str | None, root: Path) -> tuple[str, int] | None:
    """(token, id) for a special token the folder names; it must be in the vocabulary."""
    if token is None:
        return None
    token_id = backend.token_to_id(token)
    if token_id is None:
        raise ValueError(f"{root}: special token {token!r} is not in the vocabulary")
    return token, token_id
