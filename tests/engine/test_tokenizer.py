"""Tokenizer against independent references: `tokenizers`, `sentencepiece`, `transformers`.

Fast tests train small tokenizers in a temp dir; the GGUF code path is exercised on metadata
built from them (same shape as the real file's). Slow tests use the real SmolLM2 GGUF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sentencepiece
import tokenizers
from tokenizers import pre_tokenizers

from engine.tokenizer import Tokenizer
from tests.engine.tokenizer_fixtures import (
    CHATML,
    GPT2_PRE,
    LLAMA3_SPLIT,
    MIXED_TEXTS,
    QWEN2_SPLIT,
    SPECIALS,
    bpe_gguf_meta,
    bpe_with_pre,
    corpus,
    split_then_bytes,
    spm_gguf_meta,
    spm_reference_encode,
    train_byte_level_bpe,
    train_sentencepiece,
    write_hf_dir,
)

# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_bpe() -> tokenizers.Tokenizer:
    return train_byte_level_bpe()


@pytest.fixture(scope="module")
def bpe_dir(trained_bpe: tokenizers.Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hf_dir(tmp_path_factory.mktemp("bpe"), trained_bpe)


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sentencepiece(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="module")
def sp(spm_dir: Path) -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(spm_dir / "tokenizer.model"))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return MIXED_TEXTS + corpus(150, seed=7)


# --- HF folder, tokenizer.json ---------------------------------------------------------------

def test_hf_json_matches_tokenizers_and_transformers(bpe_dir: Path, texts: list[str]) -> None:
    from transformers import AutoTokenizer

    ours = Tokenizer.from_dir(bpe_dir)
    raw = tokenizers.Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(str(bpe_dir))
    for text in texts:
        ids = ours.encode(text)
        assert ids == raw.encode(text).ids == hf.encode(text), text
        assert ours.decode(ids) == raw.decode(ids, skip_special_tokens=False) == text
        assert ours.decode(ids, skip_special_tokens=True) == hf.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_long_texts_tokenize_the_same_and_free_the_gil(bpe_dir: Path, texts: list[str]) -> None:
    """Past LONG_TEXT the batch calls are used (they release the GIL): same ids, same text,
    and another thread runs meanwhile."""
    import threading
    import time

    from engine.tokenizer.backends import LONG_TEXT

    ours = Tokenizer.from_dir(bpe_dir)
    raw = tokenizers.Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    long = " ".join(texts) * (8 * LONG_TEXT // len(" ".join(texts)) + 1)
    ids = ours.encode(long)
    assert len(long) > LONG_TEXT and len(ids) > LONG_TEXT
    assert ids == raw.encode(long).ids
    assert ours.decode(ids) == raw.decode(ids, skip_special_tokens=False) == long
    assert ours.decode(ids, skip_special_tokens=True) == raw.decode(ids)
    huge = long * (200_000 // len(long) + 1)  # a few tenths of a second to tokenize
    beats: list[float] = []
    done = threading.Event()

    def heartbeat() -> None:
        while not done.is_set():
            beats.append(time.monotonic())
            time.sleep(0.002)

    thread = threading.Thread(target=heartbeat)
    thread.start()
    start = time.monotonic()
    ours.encode(huge)
    took = time.monotonic() - start
    done.set()
    thread.join()
    during = [b for b in beats if start <= b <= start + took]
    assert took > 0.05 and len(during) >= 5, (took, len(during))  # it beat all along


def test_hf_json_special_token_facts(bpe_dir: Path) -> None:
    tok = Tokenizer.from_dir(bpe_dir)
    raw = tokenizers.Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    assert tok.vocab_size == raw.get_vocab_size()
    assert (tok.bos_token, tok.bos_token_id) == ("<|im_start|>", raw.token_to_id("<|im_start|>"))
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", raw.token_to_id("<|im_end|>"))
    assert tok.add_bos_token is False
    assert tok.chat_template == CHATML
    assert tok.all_special_ids == {raw.token_to_id(t) for t in SPECIALS}
    # Special tokens are matched whole; written text of the same characters is not split.
    assert tok.encode("<|im_start|>", add_special_tokens=False) == [tok.bos_token_id]


def test_hf_json_add_bos_token_from_config(trained_bpe: tokenizers.Tokenizer,
                                           tmp_path: Path) -> None:
    folder = write_hf_dir(tmp_path, trained_bpe, add_bos_token=True)
    tok = Tokenizer.from_dir(folder)
    raw = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert tok.add_bos_token
    for text in MIXED_TEXTS:
        assert tok.encode(text) == [tok.bos_token_id, *raw.encode(text).ids]
        assert tok.encode(text, add_special_tokens=False) == raw.encode(text).ids


def test_hf_json_padding_and_truncation_are_ignored(tmp_path: Path) -> None:
    """Some tokenizer.json files (all-MiniLM) pad to a fixed length; encode must not."""
    tok = train_byte_level_bpe(300)
    tok.enable_padding(length=64, pad_id=0, pad_token="<|endoftext|>")
    tok.enable_truncation(max_length=4)
    ours = Tokenizer.from_dir(write_hf_dir(tmp_path, tok))
    tok.no_padding()
    tok.no_truncation()
    text = "hello world, café 2024 🚀"
    assert ours.encode(text) == tok.encode(text).ids
    assert len(ours.encode(text)) > 4


def test_byte_level_token_bytes_rebuild_the_text(bpe_dir: Path, texts: list[str]) -> None:
    tok = Tokenizer.from_dir(bpe_dir)
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8"), text
    hf = tokenizers.Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    assert [tok.id_to_token(i) for i in range(tok.vocab_size)] == [
        hf.id_to_token(i) for i in range(tok.vocab_size)]


def test_chat_template_file_and_named_templates(trained_bpe: tokenizers.Tokenizer,
                                                tmp_path: Path) -> None:
    named = write_hf_dir(tmp_path / "named", trained_bpe, chat_template=[
        {"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}])
    assert Tokenizer.from_dir(named).chat_template == "D"
    jinja = write_hf_dir(tmp_path / "jinja", trained_bpe, chat_template=None)
    (jinja / "chat_template.jinja").write_text("J")
    assert Tokenizer.from_dir(jinja).chat_template == "J"


def test_from_dir_errors(tmp_path: Path, trained_bpe: tokenizers.Tokenizer) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.from_dir(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    bad = write_hf_dir(tmp_path / "bad", trained_bpe, eos_token="<|not-a-token|>")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        Tokenizer.from_dir(bad)
    (bad / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_config.json"):
        Tokenizer.from_dir(bad)


def test_ids_out_of_range_raise(bpe_dir: Path) -> None:
    tok = Tokenizer.from_dir(bpe_dir)
    for call in (tok.id_to_token, tok.token_bytes, lambda i: tok.decode([i])):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            call(tok.vocab_size)
        with pytest.raises(ValueError, match="outside the vocabulary"):
            call(-1)


# --- HF folder, sentencepiece tokenizer.model -------------------------------------------------

def test_sentencepiece_dir_matches_sentencepiece(spm_dir: Path, sp: Any,
                                                 texts: list[str]) -> None:
    tok = Tokenizer.from_dir(spm_dir)
    assert (tok.bos_token_id, tok.eos_token_id, tok.add_bos_token) == (1, 2, True)
    assert tok.vocab_size == sp.get_piece_size()
    assert {0, 1, 2, sp.piece_to_id("<|im_start|>")} <= tok.all_special_ids
    for text in texts:
        ids = tok.encode(text)
        assert ids == spm_reference_encode(sp, text), text
        if "<|" not in text:
            assert tok.decode(ids, skip_special_tokens=True) == sp.decode(ids)
        pieces = [sp.id_to_piece(i) for i in ids]
        assert [tok.id_to_token(i) for i in ids] == pieces


def test_sentencepiece_token_bytes(spm_dir: Path) -> None:
    tok = Tokenizer.from_dir(spm_dir)
    ids = tok.encode("x 😀 wörld", add_special_tokens=False)
    # sentencepiece's dummy prefix makes the text start with a space.
    assert b"".join(tok.token_bytes(i) for i in ids) == " x 😀 wörld".encode()


# --- GGUF metadata (fast: built from the trained tokenizers) ----------------------------------

@pytest.mark.parametrize("pre", ["gpt2", "smollm", "llama-bpe", "qwen2"])
def test_gguf_bpe_pre_types_match_hf_pre_tokenizers(pre: str, trained_bpe: tokenizers.Tokenizer,
                                                    texts: list[str]) -> None:
    """Each llama.cpp pre type against the HF pre-tokenizer its models ship with."""
    reference = {
        "gpt2": (GPT2_PRE, False),
        # SmolLM2 / StarCoder: individual digits, then GPT-2's byte-level regex.
        "smollm": (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                            GPT2_PRE]), False),
        "llama-bpe": (split_then_bytes(LLAMA3_SPLIT), True),
        "qwen2": (split_then_bytes(QWEN2_SPLIT), False),
    }
    ref = bpe_with_pre(trained_bpe, *reference[pre])
    ours = Tokenizer.from_gguf_metadata(bpe_gguf_meta(trained_bpe, pre))
    for text in texts:
        ids = ours.encode(text)
        assert ids == ref.encode(text).ids, text
        assert ours.decode(ids) == text


def test_gguf_pre_types_really_differ(trained_bpe: tokenizers.Tokenizer) -> None:
    """The comparison above can fail: the pre types tokenize digits differently."""
    text = "in 2024 we paid 1,000,000 for 12345 it's 42 WE'LL (a+b)\n\n  return"
    encodings = {pre: tuple(Tokenizer.from_gguf_metadata(bpe_gguf_meta(trained_bpe, pre))
                            .encode(text)) for pre in ("gpt2", "smollm", "llama-bpe", "qwen2")}
    assert len(set(encodings.values())) == 4


def test_gguf_llama3_pre_ignores_merges_for_whole_words() -> None:
    """llama.cpp (like Llama-3's tokenizer.json) takes a pre-token found in the vocabulary as
    one token even when no merge path builds it; GPT-2-style vocabularies do not."""
    alphabet = sorted(set(pre_tokenizers.ByteLevel.alphabet()))
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *alphabet, "hello"]
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [3, 3, 3] + [1] * (len(tokens) - 3),
            "tokenizer.ggml.merges": [], "tokenizer.ggml.eos_token_id": 2}
    llama3 = Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.pre": "llama-bpe"})
    gpt2 = Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.pre": "gpt2"})
    assert llama3.encode("hello", add_special_tokens=False) == [len(tokens) - 1]
    assert len(gpt2.encode("hello")) == 5


def test_gguf_bpe_special_token_facts(trained_bpe: tokenizers.Tokenizer) -> None:
    meta = bpe_gguf_meta(trained_bpe, "smollm")
    tok = Tokenizer.from_gguf_metadata(meta)
    assert tok.vocab_size == len(meta["tokenizer.ggml.tokens"])
    assert (tok.bos_token, tok.bos_token_id, tok.eos_token, tok.eos_token_id) == (
        "<|im_start|>", 1, "<|im_end|>", 2)
    assert tok.pad_token_id == 2
    assert tok.add_bos_token is False
    assert tok.chat_template == CHATML
    assert tok.all_special_ids == {0, 1, 2}
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2
    assert tok.decode(ids, skip_special_tokens=True) == "user\nhi"
    with_bos = Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.add_bos_token": True})
    assert with_bos.add_bos_token
    assert with_bos.encode("hi") == [1, *tok.encode("hi")]
    assert with_bos.encode("hi", add_special_tokens=False) == tok.encode("hi")


def test_gguf_bad_metadata_raises(trained_bpe: tokenizers.Tokenizer) -> None:
    meta = bpe_gguf_meta(trained_bpe, "gpt2")
    with pytest.raises(ValueError, match="pre-tokenizer 'made-up'"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.pre": "made-up"})
    with pytest.raises(ValueError, match="tokenizer model 'rwkv'"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.model": "rwkv"})
    with pytest.raises(ValueError, match="no tokenizer.ggml.tokens"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.tokens": []})
    with pytest.raises(ValueError, match="out of range"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.eos_token_id": 10**6})


def test_gguf_spm_matches_sentencepiece(sp: Any, texts: list[str]) -> None:
    tok = Tokenizer.from_gguf_metadata(spm_gguf_meta(sp))
    assert tok.add_bos_token and tok.bos_token == "<s>" and tok.eos_token == "</s>"
    for text in texts:
        ids = tok.encode(text)
        assert ids == spm_reference_encode(sp, text), text
        if "<|" not in text:
            assert tok.decode(ids, skip_special_tokens=True) == sp.decode(ids)
    ids = tok.encode("x 😀 wörld", add_special_tokens=False)
    assert b"".join(tok.token_bytes(i) for i in ids) == " x 😀 wörld".encode()


# --- the real SmolLM2 GGUF (slow) -------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2_meta(smollm2_tokenizer_meta: dict[str, Any]) -> dict[str, Any]:
    return smollm2_tokenizer_meta


@pytest.fixture(scope="module")
def smollm2_hf(smollm2_hf_tokenizer: Any) -> Any:
    return smollm2_hf_tokenizer


@pytest.mark.slow
def test_smollm2_gguf_facts(smollm2_meta: dict[str, Any]) -> None:
    tok = Tokenizer.from_gguf_metadata(smollm2_meta)
    assert tok.vocab_size == 49152
    assert (tok.bos_token, tok.bos_token_id) == ("<|im_start|>", 1)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert tok.add_bos_token is False
    assert {0, 1, 2} <= tok.all_special_ids
    assert "<|im_start|>" in (tok.chat_template or "")


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers(smollm2_meta: dict[str, Any], smollm2_hf: Any,
                                           texts: list[str]) -> None:
    """transformers' GGUF conversion ignores `pre` and uses plain GPT-2 byte-level splitting;
    SmolLM2's own tokenizer.json (and llama.cpp's "smollm" pre type) first isolate every
    numeric character. For ASCII digits both agree (the vocabulary has no merges across
    digits), but numerals like '²' or '٣' differ: after a space, transformers merges them
    with the space, SmolLM2's real tokenizer does not. So the reference is transformers'
    converted tokenizer with SmolLM2's real pre-tokenizer put back."""
    ours = Tokenizer.from_gguf_metadata(smollm2_meta)
    backend = smollm2_hf.backend_tokenizer
    plain = tokenizers.Tokenizer.from_str(backend.to_str())
    real = tokenizers.Tokenizer.from_str(backend.to_str())
    real.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), GPT2_PRE])
    for text in texts:
        ids = ours.encode(text)
        assert ids == real.encode(text, add_special_tokens=True).ids, text
        assert ours.decode(ids) == smollm2_hf.decode(ids, clean_up_tokenization_spaces=False)
        assert ours.decode(ids, skip_special_tokens=True) == smollm2_hf.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert ours.encode("12345") == smollm2_hf.encode("12345")
    assert len(ours.encode("12345")) == 5
    assert ours.encode("a ²") != plain.encode("a ²").ids


@pytest.mark.slow
def test_smollm2_token_bytes_and_pieces(smollm2_meta: dict[str, Any], smollm2_hf: Any,
                                        texts: list[str]) -> None:
    tok = Tokenizer.from_gguf_metadata(smollm2_meta)
    for text in texts:
        ids = tok.encode(text.replace("<|", "< |"))
        assert b"".join(tok.token_bytes(i) for i in ids) == text.replace("<|", "< |").encode()
        assert [tok.id_to_token(i) for i in ids] == smollm2_hf.convert_ids_to_tokens(ids)
    assert tok.token_bytes(2) == b"<|im_end|>"
