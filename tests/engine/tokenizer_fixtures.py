"""Builders shared by the tokenizer tests: small trained tokenizers, HF folders and GGUF
metadata made from them, sample texts, and independent references to compare against.

Plain functions and constants; the pytest fixtures live in the test modules that use them.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import sentencepiece
import tokenizers
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Public pre-tokenizer regexes as the models' own tokenizer.json files write them.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

WORDS = ["hello", "world", "The", "quick", "brown", "fox", "it's", "don't", "WE'LL", "café",
         "naïve", "façade", "über", "Ελληνικά", "русский", "東京", "日本語", "の", "首都", "😀",
         "🚀🎉", "👍🏽", "2024", "3.14159", "1,000,000", "42", "½", "x²", "٣", "(a+b)", "{}",
         "def", "return", "\n", "\n\n", "\t", "   ", "  ", "<tag>", "...", "!?"]
MIXED_TEXTS = [
    "Hello world! 123",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|><|endoftext|>",
    "Café déjà vu — naïve façade. 東京は日本の首都です。 🙂🚀 👍🏽",
    "  leading and trailing   spaces  ",
    "tabs\tand\nnewlines\n\n\n  indented\r\nwindows",
    "numbers 0123456789 12345 3.14 1,000 x² ½ ٣٤٥",
    "it's don't WE'LL I'd they're",
    "",
    " ",
    "emoji only 🤗🤗🤗 and ZWJ 👨‍👩‍👧",
]


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(WORDS) + rng.choice([" ", " ", "", "\n"])
                    for _ in range(rng.randint(1, 14))) for _ in range(n)]


def train_byte_level_bpe(vocab_size: int = 700) -> tokenizers.Tokenizer:
    """A GPT-2-style byte-level BPE (its vocabulary has multi-digit merges)."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(400) * 3, trainer)
    return tok


def write_hf_dir(folder: Path, tok: tokenizers.Tokenizer, **config: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    base = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": False,
            "chat_template": CHATML, "tokenizer_class": "PreTrainedTokenizerFast"}
    (folder / "tokenizer_config.json").write_text(json.dumps({**base, **config}))
    return folder


def bpe_gguf_meta(tok: tokenizers.Tokenizer, pre: str, **extra: Any) -> dict[str, Any]:
    """GGUF tokenizer metadata (as gguf.GGUFReader gives it) for a byte-level BPE."""
    model = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre,
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [3 if t in SPECIALS else 1 for t in tokens],
            "tokenizer.ggml.merges": merges, "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.padding_token_id": 2,
            "tokenizer.ggml.add_bos_token": False, "tokenizer.chat_template": CHATML, **extra}


def bpe_with_pre(tok: tokenizers.Tokenizer, pre: pre_tokenizers.PreTokenizer,
                 ignore_merges: bool = False) -> tokenizers.Tokenizer:
    """The same vocabulary and merges with another pre-tokenizer: an HF-side reference."""
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    ref = tokenizers.Tokenizer(models.BPE(vocab=model["vocab"], merges=merges,
                                          ignore_merges=ignore_merges))
    ref.pre_tokenizer = pre
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens(SPECIALS)
    return ref


GPT2_PRE = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def split_then_bytes(regex: str) -> pre_tokenizers.PreTokenizer:
    """A regex split, then byte-level mapping: how Llama-3 / Qwen2 tokenizer.json files
    pre-tokenize."""
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                             use_regex=False)])


def train_sentencepiece(folder: Path) -> Path:
    """A Llama-style sentencepiece BPE model: byte fallback, no normalization."""
    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([t for t in corpus(1500, seed=1) if t.strip()]),
        model_writer=model, vocab_size=700, model_type="bpe", byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        control_symbols=["<|im_start|>", "<|im_end|>"], unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, character_coverage=1.0, minloglevel=2, num_threads=1)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}))
    return folder


def spm_gguf_meta(sp: sentencepiece.SentencePieceProcessor) -> dict[str, Any]:
    def kind(i: int) -> int:
        if sp.is_unknown(i):
            return 2
        if sp.is_control(i):
            return 3
        return 6 if sp.is_byte(i) else 1

    n = sp.get_piece_size()
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
            "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
            "tokenizer.ggml.scores": [sp.get_score(i) for i in range(n)],
            "tokenizer.ggml.token_type": [kind(i) for i in range(n)],
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.add_bos_token": True,
            "tokenizer.ggml.add_space_prefix": True}


def spm_reference_encode(sp: sentencepiece.SentencePieceProcessor, text: str) -> list[int]:
    """llama.cpp's SPM rule: control tokens matched whole, each raw piece encoded by
    sentencepiece (which adds its dummy-prefix space), BOS first."""
    ids = [sp.bos_id()]
    for part in _split_keep(text, ["<|im_start|>", "<|im_end|>", "<s>", "</s>"]):
        ids.extend([sp.piece_to_id(part)] if part in ("<|im_start|>", "<|im_end|>", "<s>", "</s>")
                   else sp.encode(part))
    return ids


def _split_keep(text: str, tokens: list[str]) -> list[str]:
    parts, start, i = [], 0, 0
    while i < len(text):
        hit = next((t for t in tokens if text.startswith(t, i)), None)
        if hit:
            parts += [text[start:i], hit]
            i = start = i + len(hit)
        else:
            i += 1
    return [p for p in [*parts, text[start:]] if p]
