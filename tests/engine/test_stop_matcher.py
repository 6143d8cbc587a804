"""Stop strings found incrementally (engine/tokenizer/stop_matcher.py): the same cut and the
same held-back text as a brute-force search over the whole text, reading each character once."""

from __future__ import annotations

import random

import pytest

from engine.model.dummy import byte_tokenizer
from engine.tokenizer.detokenizer import IncrementalDetokenizer
from engine.tokenizer.stop_matcher import StopMatcher, stop_matcher


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer(512)  # one token per ASCII character


def brute_cut(text: str, stops: list[str], include: bool) -> tuple[str, str | None]:
    """Where generation halts: the stop string completed first (at equal ends, the longest)."""
    for end in range(1, len(text) + 1):
        done = [s for s in stops if text[:end].endswith(s)]
        if done:
            s = max(done, key=len)
            return text[: end if include else end - len(s)], s
    return text, None


def brute_held(text: str, stops: list[str]) -> int:
    """Longest suffix of `text` that is a proper prefix of some stop string."""
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


def test_overlapping_stops_match_a_brute_force_search(tok) -> None:
    """Stops over a two-letter alphabet overlap, nest and share prefixes: every failure link
    of the automaton is exercised."""
    rng = random.Random(5)
    for _ in range(400):
        stops = list({"".join(rng.choice("ab") for _ in range(rng.randint(1, 7)))
                      for _ in range(rng.randint(1, 6))})
        text = "".join(rng.choice("ab") for _ in range(rng.randint(0, 40)))
        include = rng.random() < 0.3
        want, reason = brute_cut(text, stops, include)
        ids = tok.encode(text, add_special_tokens=False)
        detok = IncrementalDetokenizer(tok, [], stop=stops, include_stop_str_in_output=include)
        released, i = "", 0
        while i < len(ids):
            n = rng.randint(1, 4)
            released += detok.step(ids[i:i + n])
            i += n
            assert want.startswith(released)
            if not detok.finished:  # exactly what may still become a stop string is held
                seen = text[: len(released) + len(detok.held_text)]
                assert len(detok.held_text) == brute_held(seen, stops), (stops, seen)
        released += detok.flush()
        assert (released, detok.stop_reason) == (want, reason), (stops, text)


def test_each_character_is_read_once(tok, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop check reads only the new text: its work per token does not grow with the
    output, nor with how much text is held back, nor with the number of stop strings."""
    read: list[int] = []
    feed = StopMatcher.feed

    def counting(self: StopMatcher, state: int, text: str) -> tuple[int, int, int]:
        read.append(len(text))
        return feed(self, state, text)

    monkeypatch.setattr(StopMatcher, "feed", counting)
    text = "hello world " * 100
    # Decoys that never match, and one stop that keeps most of the recent text held back.
    stops = ["Q" * 500, "X" * 300, ("hello world " * 50)[:499] + "#"]
    detok = IncrementalDetokenizer(tok, [], stop=stops)
    out = "".join(detok.step([i]) for i in tok.encode(text, add_special_tokens=False))
    assert len(detok.held_text) > 400  # the worst case for a check that rereads held text
    assert out + detok.flush() == text
    assert sum(read) == len(text) and max(read) == 1


def test_matchers_are_shared_and_reject_empty_stops() -> None:
    assert stop_matcher(("a", "bc")) is stop_matcher(("a", "bc"))
    with pytest.raises(ValueError):
        StopMatcher(["ok", ""])
