"""Incremental detokenization with stop strings.

Token ids arrive a few at a time; text leaves as deltas that are safe to show:
- A byte-level BPE token can carry half of a multi-byte character, so text is released only
  when the decoded window does not end in U+FFFD (the replacement for an incomplete sequence).
- Some decoders drop a token's leading space when it starts the decoded text (sentencepiece),
  so each delta is the difference between decoding a window with and without the new tokens;
  the window starts a few tokens back (in the prompt at first).
- Text that could still become a stop string is held back until it is decided.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        self._stops = [stop] if isinstance(stop, str) else list(stop)
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
        if self._stops:
            self._check_stop(start)

    def _check_stop(self, new_start: int) -> None:
        """Look for a stop string ending in the new text; the one completed first wins.
        A match cannot begin in released text: that was held back while it could."""
        best: tuple[int, int, str] | None = None
        for s in self._stops:
            i = self._pending.find(s, max(0, new_start - len(s) + 1))
            if i >= 0 and (best is None or (i + len(s), i) < best[:2]):
                best = (i + len(s), i, s)
        if best is None:
            return
        end, start, s = best
        self._pending = self._pending[: end if self._include_stop else start]
        self.stop_reason = s
        self.finished = True

    def _release(self, final: bool) -> str:
        end = len(self._pending) if final else len(self._pending) - self._held_length()
        out, self._pending = self._pending[:end], self._pending[end:]
        return out

    def _held_length(self) -> int:
        """Length of the longest suffix of the pending text that begins some stop string."""
        held = 0
        for s in self._stops:
            for k in range(min(len(s) - 1, len(self._pending)), held, -1):
                if self._pending.endswith(s[:k]):
                    held = k
                    break
        return held
