"""The OpenAI error envelope, raised as APIError anywhere in a handler."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class APIError(Exception):
    """An error the client caused (or a capacity limit): becomes the envelope, never a 500."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> web.Response:
        return web.Response(
            status=self.status, text=json.dumps(self.body()), content_type="application/json",
            headers=self.headers,
        )


class BodyReadTimeout(TimeoutError):
    """A request body did not arrive whole within --body-timeout (a TimeoutError, so that
    aiohttp's own clean-up after the response treats it as one and closes the connection)."""


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def model_not_found(name: str) -> APIError:
    return APIError(404, f"The model `{name}` does not exist", "invalid_request_error", "model",
                    "model_not_found")


def context_length_exceeded(prompt_tokens: int, max_tokens: int, limit: int,
                            param: str = "messages") -> APIError:
    """OpenAI's wording; `param` is the field holding the prompt (messages or prompt)."""
    return APIError(
        400,
        f"This model's maximum context length is {limit} tokens. However, you requested "
        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {param}, {max_tokens} "
        f"in the completion). Please reduce the length of the {param} or completion.",
        "invalid_request_error", param, "context_length_exceeded",
    )


def server_shutting_down() -> APIError:
    """What a request still running when shutdown's grace period ends gets: a 503, or for a
    stream that has begun, an error event before [DONE]."""
    return APIError(503, "The server is shutting down: this request did not finish within "
                    "its grace period. Retry on another instance or later.", "server_error",
                    code="server_shutting_down", headers={"Retry-After": "5"})
