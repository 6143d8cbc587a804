"""Incremental detokenization with stop strings.

Token ids arrive a few at a time; text leaves as deltas that are safe to show:
- A byte-level BPE token can carry half of a multi-byte character, so text is released only
  when the decoded window does not end in U+FFFD (the replacement for an incomplete sequence).
- Some decoders drop a token's leading space when it starts the decoded text (sentencepiece),
  so each delta is the difference between decoding a window with and without the new tokens;
  the window starts a few tokens back (in the prompt at first).
- Text that could still become a stop string is held back until it is decided. Stop strings
  are found by an automaton fed only the new text (stop_matcher.py), so the work per token
  does not grow with the output, the number of stop strings or their length.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.tokenizer.stop_matcher import StopMatcher, stop_matcher
from engine.tokenizer.tokenizer import Tokenizer

# Tokens of left context decoded with the new ones (enough for any leading-space rule).
_CONTEXT_TOKENS = 5
_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Turns one sequence's generated token ids into text deltas, honouring stop strings
    (validated by SamplingParams)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompt_ids: Sequence[int],
        *,
        skip_special_tokens: bool = True,
        stop: Sequence[str] = (),
        include_stop_str_in_output: bool = False,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        stops = (stop,) if isinstance(stop, str) else tuple(stop)
        self._matcher: StopMatcher | None = stop_matcher(stops) if stops else None
        self._state = 0  # the matcher's state after all text so far
        self._include_stop = include_stop_str_in_output
        # Window of ids still needed: [_prefix, _read) is context already turned into text,
        # [_read, end) is not yet released.
        self._ids: list[int] = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix = 0
        self._read = len(self._ids)
        # Decoded text not yet released (a possible stop string's start). Released text is
        # the caller's: nothing here grows with the output.
        self._pending = ""
        self.finished = False
        self.stop_reason: str | None = None

    @property
    def held_text(self) -> str:
        """Decoded text held back (it may still become a stop string)."""
        return self._pending

    def step(self, new_token_ids: Sequence[int]) -> str:
        """Add generated tokens; return the text that became safe to show."""
        if self.finished:
            return ""
        self._ids.extend(new_token_ids)
        delta, complete = self._window_delta()
        if delta and complete:
            self._advance()
            self._append(delta)
        return self._release(final=self.finished)

    def flush(self) -> str:
        """Finish: return everything still held back (broken trailing bytes become U+FFFD)."""
        if self.finished:
            return ""
        delta, _ = self._window_delta()
        if delta:
            self._advance()
            self._append(delta)
        self.finished = True
        return self._release(final=True)

    def _window_delta(self) -> tuple[str, bool]:
        """Text the unreleased ids add to the window, and whether it ends on a whole character."""
        decode = self._tokenizer.decode
        before = decode(self._ids[self._prefix:self._read], skip_special_tokens=self._skip_special)
        after = decode(self._ids[self._prefix:], skip_special_tokens=self._skip_special)
        if len(after) <= len(before):
            return "", False
        return after[len(before):], not after.endswith(_REPLACEMENT)

    def _advance(self) -> None:
        """The unreleased ids are now text: they become the next window's context."""
        self._prefix, self._read = self._read, len(self._ids)
        # Keep only the window so memory does not grow with the output.
        if self._prefix > _CONTEXT_TOKENS:
            drop = self._prefix - _CONTEXT_TOKENS
            del self._ids[:drop]
            self._prefix -= drop
            self._read -= drop

    def _append(self, delta: str) -> None:
        start = len(self._pending)
        self._pending += delta
        if self._matcher is None:
            return
        # Only the new text is read; the state carries what the held text had begun. A match
        # cannot begin in released text: that was held back while it could.
        self._state, read, index = self._matcher.feed(self._state, delta)
        if index < 0:
            return
        stop = self._matcher.stops[index]
        end = start + read
        self._pending = self._pending[: end if self._include_stop else end - len(stop)]
        self.stop_reason = stop
        self.finished = True

    def _release(self, final: bool) -> str:
        end = len(self._pending) if final else len(self._pending) - self._held_length()
        out, self._pending = self._pending[:end], self._pending[end:]
        return out

    def _held_length(self) -> int:
        """Length of the longest suffix of the pending text that begins some stop string."""
        if self._matcher is None:
            return 0
        return min(self._matcher.held(self._state), len(self._pending))
