"""IncrementalDetokenizer: streamed deltas must add up to the one-shot decode, never show a
broken character, and cut stop strings exactly (also across tokens and multi-byte chars)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from engine.tokenizer import Tokenizer
from engine.tokenizer.detokenizer import IncrementalDetokenizer
from tests.engine.tokenizer_fixtures import (
    spm_gguf_meta,
    train_byte_level_bpe,
    train_sentencepiece,
    write_hf_dir,
)

# Characters mostly absent from the small tokenizer's training corpus, so their UTF-8 bytes
# land in separate byte tokens and split characters across tokens.
PIECES = ["🦄", "🧪🧬", "👩‍💻", "🇫🇷", "漢字", "中文测试", "한국어", "ŝĉ", "é", "naïve", "Ωμέγα",
          "ж", "ā", "😀", "東京", " ", "  ", "\n", "x", "ab", "STOP", "st", "42", "."]
REPLACEMENT = "\ufffd"


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 25)))


def chunks(ids: Sequence[int], rng: random.Random) -> list[list[int]]:
    """Split ids into steps of 1-3 tokens (as a scheduler may hand over several at once)."""
    out, i = [], 0
    while i < len(ids):
        n = rng.choice([1, 1, 1, 2, 3])
        out.append(list(ids[i:i + n]))
        i += n
    return out


def stream(tok: Tokenizer, prompt: Sequence[int], ids: Sequence[int], rng: random.Random,
           **kwargs: Any) -> tuple[IncrementalDetokenizer, list[str]]:
    detok = IncrementalDetokenizer(tok, prompt, **kwargs)
    deltas = [detok.step(c) for c in chunks(ids, rng)]
    deltas.append(detok.flush())
    return detok, deltas


@pytest.fixture(scope="module")
def bpe_tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return Tokenizer.from_dir(write_hf_dir(tmp_path_factory.mktemp("bpe"), train_byte_level_bpe()))


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_sentencepiece(tmp_path_factory.mktemp("spm"))


def check_round_trip(tok: Tokenizer, seed: int, cases: int) -> None:
    rng = random.Random(seed)
    prompt = tok.encode("<|im_start|>user\nsay it<|im_end|>\n<|im_start|>assistant\n")
    split_chars = 0
    for _ in range(cases):
        ids = tok.encode(random_text(rng), add_special_tokens=False)
        split_chars += any(REPLACEMENT in tok.decode([i]) for i in ids)
        for skip in (True, False):
            detok, deltas = stream(tok, prompt, ids, rng, skip_special_tokens=skip)
            full = tok.decode(ids, skip_special_tokens=skip)
            assert "".join(deltas) == full and detok.held_text == ""
            assert not any(REPLACEMENT in d for d in deltas)
            assert detok.finished and detok.stop_reason is None
    assert split_chars > cases // 2, "the test should split characters across tokens"


def test_round_trip_byte_level(bpe_tok: Tokenizer) -> None:
    check_round_trip(bpe_tok, seed=0, cases=150)


def test_random_ids_never_leak_broken_chars(bpe_tok: Tokenizer) -> None:
    """Arbitrary id sequences, special tokens and invalid UTF-8 included."""
    rng = random.Random(1)
    for _ in range(200):
        ids = [rng.randrange(bpe_tok.vocab_size) for _ in range(rng.randint(1, 30))]
        for skip in (True, False):
            _, deltas = stream(bpe_tok, [], ids, rng, skip_special_tokens=skip)
            full = bpe_tok.decode(ids, skip_special_tokens=skip)
            assert "".join(deltas) == full
            if REPLACEMENT not in full:
                assert not any(REPLACEMENT in d for d in deltas)


def test_broken_char_is_held_then_released(bpe_tok: Tokenizer) -> None:
    ids = bpe_tok.encode("🦄", add_special_tokens=False)
    assert len(ids) > 1
    detok = IncrementalDetokenizer(bpe_tok, [])
    assert [detok.step([i]) for i in ids] == [""] * (len(ids) - 1) + ["🦄"]


def test_flush_emits_broken_tail_as_replacement(bpe_tok: Tokenizer) -> None:
    ids = bpe_tok.encode("ok🦄", add_special_tokens=False)
    detok = IncrementalDetokenizer(bpe_tok, [])
    released = "".join(detok.step([i]) for i in ids[:-1])
    assert released == "ok" and detok.held_text == ""  # the broken tail is not text yet
    assert detok.flush() == bpe_tok.decode(ids[:-1])[len("ok"):]
    assert detok.flush() == ""


def expected_cut(text: str, stops: list[str], include: bool) -> tuple[str, str | None]:
    """Generation halts when a stop string is first completed; cut before it (or after)."""
    found = [(text.find(s) + len(s), text.find(s), s) for s in stops if s in text]
    if not found:
        return text, None
    end, start, s = min(found)
    return text[: end if include else start], s


def check_stops(tok: Tokenizer, seed: int, cases: int) -> None:
    rng = random.Random(seed)
    for _ in range(cases):
        text = tok.decode(tok.encode(random_text(rng), add_special_tokens=False))
        a = rng.randrange(len(text))
        stops = [text[a:a + rng.randint(1, 6)], rng.choice(["STOP", "🦄x", "中文", "zzz"])]
        include = rng.random() < 0.3
        want, reason = expected_cut(text, stops, include)
        ids = tok.encode(text, add_special_tokens=False)
        detok = IncrementalDetokenizer(tok, [], stop=stops, include_stop_str_in_output=include)
        released = ""
        for step in chunks(ids, rng):
            released += detok.step(step)
            assert want.startswith(released)  # nothing past the cut ever leaks
            if not include:
                assert not any(s in released for s in stops)
        released += detok.flush()
        assert released == want and detok.held_text == ""
        assert detok.stop_reason == reason
        assert detok.finished


def test_stop_strings_byte_level(bpe_tok: Tokenizer) -> None:
    check_stops(bpe_tok, seed=2, cases=300)


def test_stop_prefix_is_held_until_decided(bpe_tok: Tokenizer) -> None:
    detok = IncrementalDetokenizer(bpe_tok, [], stop=["STOP"])
    out = [detok.step(bpe_tok.encode(t, add_special_tokens=False)) for t in ["say ", "ST", "O"]]
    assert out == ["say ", "", ""]
    assert detok.step(bpe_tok.encode("x", add_special_tokens=False)) == "STOx"
    assert detok.step(bpe_tok.encode(" ST", add_special_tokens=False)) == " "
    assert detok.held_text == "ST"
    assert detok.flush() == "ST"
    assert detok.stop_reason is None and detok.held_text == ""


def test_stop_across_tokens_and_first_completed_wins(bpe_tok: Tokenizer) -> None:
    ids = bpe_tok.encode("abcdef 🦄🦄 end", add_special_tokens=False)
    detok = IncrementalDetokenizer(bpe_tok, [], stop=["bcdef", "cd"])
    assert "".join(detok.step([i]) for i in ids) == "ab"
    assert detok.stop_reason == "cd" and detok.finished
    assert detok.step(ids[:1]) == "" and detok.held_text == ""
    detok = IncrementalDetokenizer(bpe_tok, [], stop=["bcdef", "cd"])
    assert detok.step(ids) == "ab"  # all at once: still the one completed first
    detok = IncrementalDetokenizer(bpe_tok, [], stop=["🦄 e"], include_stop_str_in_output=True)
    assert "".join(detok.step([i]) for i in ids) + detok.flush() == "abcdef 🦄🦄 e"


@pytest.mark.parametrize("source", ["gguf", "dir"])
def test_sentencepiece_keeps_leading_spaces(spm_folder: Path, source: str) -> None:
    """Decoding '▁fox' alone gives 'fox'; with the prompt as context the space survives."""
    import sentencepiece

    if source == "gguf":
        sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_folder / "tokenizer.model"))
        tok = Tokenizer.from_gguf_metadata(spm_gguf_meta(sp))
    else:
        tok = Tokenizer.from_dir(spm_folder)
    rng = random.Random(3)
    prompt = tok.encode("hello world")
    for _ in range(50):
        ids = tok.encode(random_text(rng) + " fox", add_special_tokens=False)
        _, deltas = stream(tok, prompt, ids, rng)
        whole = tok.decode(prompt + ids, skip_special_tokens=True)
        assert "".join(deltas) == whole[len(tok.decode(prompt, skip_special_tokens=True)):]
        assert not any(REPLACEMENT in d for d in deltas)
        _, deltas = stream(tok, [], ids, rng)
        assert "".join(deltas) == tok.decode(ids)


@pytest.fixture(scope="module")
def smollm2_tok(smollm2_tokenizer_meta: dict) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(smollm2_tokenizer_meta)


@pytest.mark.slow
def test_round_trip_smollm2(smollm2_tok: Tokenizer) -> None:
    check_round_trip(smollm2_tok, seed=4, cases=150)


@pytest.mark.slow
def test_stop_strings_smollm2(smollm2_tok: Tokenizer) -> None:
    check_stops(smollm2_tok, seed=5, cases=300)
