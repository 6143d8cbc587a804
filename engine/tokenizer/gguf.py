"""GGUF tokenizer metadata rebuilt as `tokenizers` models that tokenize the way llama.cpp does.

Two vocabularies (`tokenizer.ggml.model`): `gpt2`, a byte-level BPE split first by the regexes of
its `tokenizer.ggml.pre` type (the table below), and `llama`, a sentencepiece-style BPE with byte
fallback whose merges come from the piece scores.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers

from engine.tokenizer.backends import TokenizersBackend

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


def gguf_vocab(meta: dict[str, Any]) -> tuple[list[str], list[int]]:
    """The vocabulary pieces and their GGUF token types, checked to line up."""
    tokens = list(meta.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise ValueError("GGUF metadata has no tokenizer.ggml.tokens")
    types = list(meta.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens))
    if len(types) != len(tokens):
        raise ValueError("GGUF tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length")
    return tokens, types


def gguf_backend(meta: dict[str, Any], tokens: list[str],
                 types: list[int]) -> tuple[TokenizersBackend, bool]:
    """The backend for `tokenizer.ggml.model`, and whether that model adds BOS by default."""
    model = meta.get("tokenizer.ggml.model")
    if model == "gpt2":
        return _gguf_bpe(meta, tokens, types)
    if model == "llama":
        return _gguf_spm(meta, tokens, types), True
    raise ValueError(f"unsupported GGUF tokenizer model {model!r} (supported: gpt2, llama)")


def gguf_special_ids(types: list[int]) -> Iterator[int]:
    """Ids of the control and unknown pieces."""
    return (i for i, t in enumerate(types) if t in (_CONTROL, _UNKNOWN))


def gguf_token(meta: dict[str, Any], tokens: list[str], name: str) -> tuple[str, int] | None:
    """(piece, id) of `tokenizer.ggml.{name}_token_id`, or None when the metadata has none."""
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
              types: list[int]) -> tuple[TokenizersBackend, bool]:
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
    return TokenizersBackend(tok, "byte_level", tokens), add_bos_default


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


def _gguf_spm(meta: dict[str, Any], tokens: list[str], types: list[int]) -> TokenizersBackend:
    scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    if len(scores) != len(tokens):
        raise ValueError("GGUF tokenizer.ggml.scores and tokenizer.ggml.tokens differ in length")
    unk = gguf_token(meta, tokens, "unknown")
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
    return TokenizersBackend(tok, "metaspace", tokens)
