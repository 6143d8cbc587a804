"""The HTTP connections under the app: aiohttp's protocol, with every answer it writes
itself (a request its parser refuses) in the OpenAI error envelope.

`make_runner(app, settings)` is what `python -m serving` serves with. aiohttp builds its
protocol objects in `Server.__call__`, so the runner gives its server a subclass that makes
ours (aiohttp is pinned; tests/serving/test_connections.py checks this over real sockets).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from serving.errors import APIError
from serving.state import ServerSettings

logger = logging.getLogger("serving.connections")


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol; its own error answers use the envelope."""

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: too late for another response
            raise ConnectionError("the response has begun; no error response can follow")
        if status >= 500:
            self.log_exception("Error handling request", exc_info=exc)
            error = APIError(status, "The server had an error while processing your request",
                             "server_error")
        else:  # the client's bytes: not our bug, so no traceback in the log
            logger.info("refused a malformed HTTP request from %s: %s", request.remote,
                        message or exc)
            error = APIError(status, f"Malformed HTTP request: {message or exc}",
                             code="bad_http_request")
        response = web.Response(status=status, text=json.dumps(error.body()),
                                content_type="application/json")
        response.force_close()  # the parser's state is unknown: this connection is done
        return response


class _GuardedServer(web.Server):
    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer  # same state, our protocol class
        return server


def make_runner(app: web.Application, settings: ServerSettings, **kwargs: Any) -> web.AppRunner:
    """The runner `python -m serving` serves `app` with (kwargs go to aiohttp's runner)."""
    return GuardedAppRunner(app, shutdown_timeout=settings.shutdown_grace_s, **kwargs)
