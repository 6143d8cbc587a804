"""Chunking by tokens: paragraphs packed whole, long ones cut into overlapping windows."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.retrieval.chunking import chunk_text


def word_offsets(text: str) -> list[tuple[int, int]]:
    """A stand-in tokenizer: one token per run of non-space characters."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def ntokens(text: str) -> int:
    return len(word_offsets(text))


def test_short_paragraphs_are_packed_whole() -> None:
    paras = ["alpha beta gamma", "delta epsilon", "zeta eta theta iota", "kappa"]
    text = "\n\n".join(paras)
    assert chunk_text(text, word_offsets, capacity=5) == [
        "alpha beta gamma\n\ndelta epsilon", "zeta eta theta iota\n\nkappa"]
    assert chunk_text(text, word_offsets, capacity=100) == [text]


def test_long_paragraph_windows_overlap() -> None:
    words = [f"w{i}" for i in range(23)]
    chunks = chunk_text(" ".join(words), word_offsets, capacity=10, overlap=3)
    assert [c.split() for c in chunks] == [words[0:10], words[7:17], words[14:23]]


def test_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match="chunk_capacity"):
        chunk_text("a b", word_offsets, capacity=0)
    with pytest.raises(ValueError, match="chunk_overlap"):
        chunk_text("a b", word_offsets, capacity=4, overlap=4)


words = st.text(alphabet="abcdefgh", min_size=1, max_size=6)
paragraph = st.lists(words, min_size=1, max_size=30).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(paragraph, min_size=1, max_size=8), st.integers(2, 12), st.integers(0, 11))
def test_every_chunk_fits_and_every_word_is_kept(paras: list[str], capacity: int,
                                                 overlap: int) -> None:
    overlap = min(overlap, capacity - 1)
    text = "\n\n".join(paras)
    chunks = chunk_text(text, word_offsets, capacity, overlap)
    assert all(0 < ntokens(c) <= capacity for c in chunks)
    assert all(c in text for c in chunks)  # slices of the original text
    # Every word position of the document is inside some chunk, in order.
    covered = " ".join(chunks).split()
    doc = text.split()
    it = iter(covered)
    assert all(any(w == c for c in it) for w in doc)
