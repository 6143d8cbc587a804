"""Stop strings found incrementally, whatever their number and length.

All of a request's stop strings go into one Aho-Corasick automaton (a trie of the strings
with failure links). The text is fed to it as it is generated, one character one move
(amortised), so the work per token is proportional to the new text only: not to the output
so far, the number of stop strings or their length. The state after each character is the
longest suffix of the text that begins some stop string: exactly the text to hold back.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence


class StopMatcher:
    """The automaton of a set of stop strings; immutable, shared by every sequence that uses
    the same strings (each keeps only its state, an int: 0 is the empty suffix)."""

    def __init__(self, stops: Sequence[str]) -> None:
        if not stops or not all(stops):
            raise ValueError("stop strings must be non-empty")
        self.stops = tuple(stops)
        goto: list[dict[str, int]] = [{}]
        depth = [0]
        ends = [-1]  # the stop string that ends exactly at a node
        for index, stop in enumerate(self.stops):
            node = 0
            for ch in stop:
                nxt = goto[node].get(ch)
                if nxt is None:
                    nxt = len(goto)
                    goto[node][ch] = nxt
                    goto.append({})
                    depth.append(depth[node] + 1)
                    ends.append(-1)
                node = nxt
            if ends[node] < 0:
                ends[node] = index
        fail = [0] * len(goto)
        # The longest stop string that ends at a node, itself or through its failure links.
        match = list(ends)
        queue = deque(goto[0].values())
        while queue:
            node = queue.popleft()
            for ch, child in goto[node].items():
                f = fail[node]
                while f and ch not in goto[f]:
                    f = fail[f]
                fail[child] = goto[f].get(ch, 0) if node else 0
                if match[child] < 0:
                    match[child] = match[fail[child]]
                queue.append(child)
        self._goto, self._fail, self._depth, self._match = goto, fail, depth, match

    def held(self, state: int) -> int:
        """Characters at the end of the text that may still become a stop string."""
        return self._depth[state]

    def feed(self, state: int, text: str) -> tuple[int, int, int]:
        """Advance over `text`: (new state, characters of `text` read, index of the stop
        string that ends there or -1). Reading ends at the first completed stop string; of
        those ending at the same character, the longest (the earliest to begin) wins."""
        goto, fail, match = self._goto, self._fail, self._match
        for i, ch in enumerate(text):
            while True:
                nxt = goto[state].get(ch)
                if nxt is not None:
                    state = nxt
                    break
                if not state:
                    break
                state = fail[state]
            if match[state] >= 0:
                return state, i + 1, match[state]
        return state, len(text), -1


@functools.lru_cache(maxsize=64)
def stop_matcher(stops: tuple[str, ...]) -> StopMatcher:
    """The automaton for these stop strings; clients tend to send the same ones."""
    return StopMatcher(stops)
