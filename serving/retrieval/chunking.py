"""Split a document into chunks of at most `capacity` tokens.

Paragraphs (blank-line separated) are packed whole into chunks while they fit, so a chunk
never cuts a short paragraph in two; a paragraph longer than `capacity` is cut into token
windows that overlap by `overlap` tokens, so no sentence is lost at a cut. Chunk texts are
slices of the original text (token offsets), not detokenized ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# text -> (start, end) character offsets of its tokens, special tokens excluded
TokenOffsets = Callable[[str], list[tuple[int, int]]]

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def check_sizes(capacity: int, overlap: int) -> None:
    if capacity < 1:
        raise ValueError(f"chunk_capacity must be at least 1, got {capacity}")
    if not 0 <= overlap < capacity:
        raise ValueError(f"chunk_overlap must be in [0, chunk_capacity), got {overlap}")


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each non-blank paragraph."""
    spans, start = [], 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _windows(offsets: list[tuple[int, int]], capacity: int, overlap: int) -> list[tuple[int, int]]:
    """Character spans of overlapping token windows over one long paragraph."""
    spans, step = [], capacity - overlap
    for i in range(0, len(offsets), step):
        window = offsets[i : i + capacity]
        spans.append((window[0][0], window[-1][1]))
        if i + capacity >= len(offsets):
            break
    return spans


def chunk_text(text: str, offsets_of: TokenOffsets, capacity: int,
               overlap: int = 0) -> list[str]:
    check_sizes(capacity, overlap)
    pieces: list[tuple[int, int, int]] = []  # (start, end, tokens)
    for a, b in _paragraphs(text):
        offsets = [(a + s, a + e) for s, e in offsets_of(text[a:b])]
        if not offsets:
            continue
        if len(offsets) <= capacity:
            pieces.append((a, b, len(offsets)))
        else:
            pieces.extend((s, e, capacity) for s, e in _windows(offsets, capacity, overlap))
    chunks: list[tuple[int, int]] = []
    used = capacity + 1
    for start, end, tokens in pieces:
        # Two paragraphs joined by a blank line cost about their own tokens: pack them.
        if used + tokens <= capacity:
            chunks[-1] = (chunks[-1][0], end)
            used += tokens
        else:
            chunks.append((start, end))
            used = tokens
    return [text[a:b].strip() for a, b in chunks]
