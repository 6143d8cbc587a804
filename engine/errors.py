"""The one exception the engine raises for a request it refuses.

Every check of a request's prompt and parameters raises InvalidRequest, naming the field
at fault, so a server can answer with a 400 that points at it (OpenAI's `param`) without
parsing messages.
"""

from __future__ import annotations


class InvalidRequest(ValueError):
    """A request the engine cannot serve as asked; `param` is the field at fault (the
    SamplingParams field, or "prompt"), or None when no single field is."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
