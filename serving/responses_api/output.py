"""Generated text -> output items (`message` with one `output_text` part, `function_call`),
and the stream events that build them, in OpenAI's order:

    response.output_item.added -> response.content_part.added -> response.output_text.delta*
    -> response.output_text.done -> response.content_part.done -> response.output_item.done
    response.output_item.added -> response.function_call_arguments.delta*
    -> response.function_call_arguments.done -> response.output_item.done

Calls are found by the chat endpoint's ToolStreamer (the same formats and hold-back rules).
A non-streamed response runs the same builder over the same deltas and drops the events,
so both kinds of answer hold the same items. Events leave without `sequence_number`; the
sender numbers them.
"""

from __future__ import annotations

import uuid
from typing import Any

from serving.tools import ToolPlan, ToolStreamer

Event = dict[str, Any]


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class OutputBuilder:
    """Output items of one response, fed the generated text piece by piece."""

    def __init__(self, plan: ToolPlan | None) -> None:
        self.streamer = ToolStreamer(plan.fmt, plan.tools) if plan is not None else None
        self.items: list[dict[str, Any]] = []
        self._open: int | None = None  # index of the item being written
        self._calls: dict[int, int] = {}  # the streamer's call index -> item index
        self._text = ""  # the open message's text so far

    # ---- feeding ---------------------------------------------------------------------

    def feed(self, text: str, final: bool) -> list[Event]:
        """Events for a new piece of generated text (`final`: the last piece)."""
        if self.streamer is None:
            return self._text_delta(text) if text else []
        deltas = self.streamer.feed(text, final)
        known = len(self._calls)
        # The tail of a call already open comes before prose and new calls: the streamer
        # reports prose first, though in the text it follows the call it ends.
        first = [d for d in deltas if _call_piece(d, known)]
        events: list[Event] = []
        for delta in first + [d for d in deltas if not _call_piece(d, known)]:
            if "content" in delta:
                events += self._text_delta(delta["content"])
            for frag in delta.get("tool_calls", []):
                events += self._call_fragment(frag)
        return events

    def finish(self, status: str) -> list[Event]:
        """Close the item being written (`incomplete` unless the response completed); a
        response that produced nothing still gets its (empty) message."""
        events: list[Event] = []
        if not self.items:
            events += self._open_message()
        events += self._close("completed" if status == "completed" else "incomplete")
        return events

    # ---- items -----------------------------------------------------------------------

    def _text_delta(self, piece: str) -> list[Event]:
        events: list[Event] = []
        if self._open is None or self.items[self._open]["type"] != "message":
            events += self._close("completed")
            events += self._open_message()
        item = self.items[self._open]  # type: ignore[index]
        self._text += piece
        events.append({"type": "response.output_text.delta", "item_id": item["id"],
                       "output_index": self._open, "content_index": 0, "delta": piece,
                       "logprobs": []})
        return events

    def _call_fragment(self, frag: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        fn = frag["function"]
        if "id" in frag:  # the head: a new call starts
            events += self._close("completed")
            item = {"id": _item_id("fc"), "type": "function_call", "status": "in_progress",
                    "arguments": "", "call_id": frag["id"], "name": fn["name"]}
            self._calls[frag["index"]] = len(self.items)
            events += self._add(item)
        piece = fn.get("arguments")
        if piece:
            at = self._calls[frag["index"]]
            item = self.items[at]
            item["arguments"] += piece
            events.append({"type": "response.function_call_arguments.delta",
                           "item_id": item["id"], "output_index": at, "delta": piece})
        return events

    def _open_message(self) -> list[Event]:
        item = {"id": _item_id("msg"), "type": "message", "status": "in_progress",
                "role": "assistant", "content": []}
        self._text = ""
        events = self._add(item)
        events.append({"type": "response.content_part.added", "item_id": item["id"],
                       "output_index": self._open, "content_index": 0, "part": _text_part("")})
        return events

    def _add(self, item: dict[str, Any]) -> list[Event]:
        self.items.append(item)
        self._open = len(self.items) - 1
        return [{"type": "response.output_item.added", "output_index": self._open,
                 "item": dict(item)}]

    def _close(self, status: str) -> list[Event]:
        if self._open is None:
            return []
        at, item = self._open, self.items[self._open]
        self._open = None
        item["status"] = status
        events: list[Event] = []
        if item["type"] == "message":
            part = _text_part(self._text)
            item["content"] = [part]
            events += [
                {"type": "response.output_text.done", "item_id": item["id"],
                 "output_index": at, "content_index": 0, "text": self._text, "logprobs": []},
                {"type": "response.content_part.done", "item_id": item["id"],
                 "output_index": at, "content_index": 0, "part": dict(part)},
            ]
        else:
            events.append({"type": "response.function_call_arguments.done",
                           "item_id": item["id"], "output_index": at, "name": item["name"],
                           "arguments": item["arguments"]})
        events.append({"type": "response.output_item.done", "output_index": at,
                       "item": dict(item)})
        return events


def _call_piece(delta: dict[str, Any], known: int) -> bool:
    """An argument piece of a call opened before this feed."""
    frags = delta.get("tool_calls") or []
    return bool(frags) and "id" not in frags[0] and frags[0]["index"] < known
