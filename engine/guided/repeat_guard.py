"""Ends an output that repeats a JSON object it already wrote after a marker.

A grammar can force every tool call to be well formed, but not that the calls differ: a
weak model under a call-list grammar may write the same call again and again until its
token limit. With `GuidedDecoding(stop_on_repeat=MARKER)`, each occurrence of MARKER opens
an object (the JSON object starting at the first "{" at or after the marker); as soon as an
object closes that equals (as JSON values) one closed before, the output ends there, as a
finished grammar ends it. The serving layer drops that repeated call from the message.
"""

from __future__ import annotations

import json

_DECODER = json.JSONDecoder()


class RepeatGuard:
    def __init__(self, marker: str) -> None:
        self._marker = marker
        self._text = ""
        self._pending = b""  # an incomplete UTF-8 character at the end
        self._pos = 0  # where the next marker is searched for (after the last closed object)
        self._seen: set[str] = set()
        self.repeated = False

    def feed(self, piece: bytes) -> bool:
        """Append one token's bytes; True once an object repeats an earlier one."""
        if self.repeated or not piece:
            return self.repeated
        data = self._pending + piece
        try:
            text = data.decode("utf-8")
            self._pending = b""
        except UnicodeDecodeError as e:
            if e.reason != "unexpected end of data":
                text, self._pending = data.decode("utf-8", "replace"), b""
            else:
                text, self._pending = data[: e.start].decode("utf-8", "replace"), data[e.start:]
        self._text += text
        if "}" in text:  # only a closing brace can complete an object
            self._scan()
        return self.repeated

    def _scan(self) -> None:
        while not self.repeated:
            start = self._text.find(self._marker, self._pos)
            if start < 0:
                return
            brace = self._text.find("{", start)
            if brace < 0:
                return
            try:
                value, end = _DECODER.raw_decode(self._text, brace)
            except ValueError:
                return  # not closed yet (or not JSON): wait for more
            key = json.dumps(value, sort_keys=True, separators=(",", ":"))
            self.repeated = key in self._seen
            self._seen.add(key)
            self._pos = end
