"""N-gram (prompt lookup) drafts: which occurrence is copied, how much, and the index."""

from __future__ import annotations

import random

import pytest

from engine.core.ngram import NGRAM_MIN, NgramIndex, propose
from engine.core.request import TokenView


def drafts(tokens: list[int], k: int, **kw) -> list[int]:
    return propose(tokens, NgramIndex(), k, **kw)


def brute_force(tokens: list[int], k: int, max_n: int = 3, min_n: int = NGRAM_MIN) -> list[int]:
    """The definition, spelled out: longest suffix first, most recent earlier occurrence."""
    last = len(tokens) - 1
    for n in range(min(max_n, len(tokens)), min_n - 1, -1):
        suffix = tokens[last - n + 1 :]
        for end in range(last - 1, n - 2, -1):  # the occurrence ends at `end` < last
            if tokens[end - n + 1 : end + 1] == suffix:
                out = tokens[end + 1 : end + 1 + k]
                while len(out) < k:  # past the end, the copy repeats itself
                    out.append(out[len(out) - (last - end)])
                return out
    return []


def test_copies_what_followed_the_suffix() -> None:
    assert drafts([1, 2, 3, 4, 5, 9, 2, 3], 2) == [4, 5]


def test_longer_match_beats_a_more_recent_shorter_one() -> None:
    # "2 3" occurs at 1..2 (then 4, 5); only "3" occurs more recently (then 8).
    assert drafts([1, 2, 3, 4, 5, 3, 8, 2, 3], 2) == [4, 5]


def test_most_recent_of_equal_matches() -> None:
    assert drafts([7, 1, 2, 7, 1, 3, 0, 7, 1], 1) == [3]


def test_no_earlier_occurrence_gives_nothing() -> None:
    assert drafts([1, 2, 3, 4], 3) == []
    assert drafts([5], 3) == []
    assert drafts([1, 2, 1], 0) == []


def test_min_n_refuses_short_matches() -> None:
    assert drafts([1, 2, 9, 5, 2], 2, min_n=2) == []
    assert drafts([1, 2, 9, 5, 2], 2, min_n=1) == [9, 5]


def test_a_loop_continues_with_its_period() -> None:
    assert drafts([4, 4, 4], 3) == [4, 4, 4]
    assert drafts([1, 8, 9, 8, 9], 5) == [8, 9, 8, 9, 8]


def test_at_most_k_tokens() -> None:
    assert drafts([1, 2, 3, 4, 5, 6, 1, 2], 3) == [3, 4, 5]


@pytest.mark.parametrize("min_n", [1, 2, 3])
def test_matches_the_definition_on_random_sequences(min_n: int) -> None:
    rng = random.Random(min_n)
    for _ in range(300):
        tokens = [rng.randrange(4) for _ in range(rng.randint(1, 30))]
        k = rng.randint(1, 6)
        assert drafts(tokens, k, min_n=min_n) == brute_force(tokens, k, min_n=min_n), tokens


def test_index_kept_across_a_growing_sequence() -> None:
    """One index extended step by step (prompt and output as a TokenView) proposes what a
    fresh index over the same tokens proposes."""
    rng = random.Random(1)
    prompt = [rng.randrange(6) for _ in range(20)]
    output: list[int] = []
    index = NgramIndex()
    for _ in range(60):
        view = TokenView(prompt, output)
        assert propose(view, index, 4) == drafts(prompt + output, 4)
        output.extend(rng.randrange(6) for _ in range(rng.randint(1, 3)))
