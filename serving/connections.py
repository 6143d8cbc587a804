"""The HTTP connections under the app: aiohttp's protocol, with every answer it writes
itself (a request its parser refuses) in the OpenAI error envelope, and bounds on what slow
or idle clients can hold (ServerSettings):

- header timeout: a connection that has not sent a whole request head header_timeout_s
  after connecting, or after its previous response, is closed (aiohttp's keep-alive timer,
  which it arms at connect and after each response and which a trickle of bytes does not
  reset, is exactly that bound);
- connection cap: past max_connections open connections, a new one's request is answered
  503 `server_overloaded` (with Retry-After) and the connection closed, without reaching
  the app;
- body timeout: in the app (serving/app.py), since it applies once the head is in.

`make_runner(app, settings)` is what `python -m serving` serves with. aiohttp builds its
protocol objects in `Server.__call__`, so the runner gives its server a subclass that makes
ours (aiohttp is pinned; tests/serving/test_connections.py checks this over real sockets).
"""

from __future__ import annotations

import asyncio
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

    def __init__(self, manager: web.Server, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._max_connections = max_connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # registers this one with the server
        manager = self._manager
        if manager is not None and len(manager.connections) > self._max_connections:
            logger.warning("%d connections are open (--max-connections %d): answering 503",
                           len(manager.connections), self._max_connections)
            self._request_handler = _overloaded  # read per request, before the first one

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


async def _overloaded(request: BaseRequest) -> web.StreamResponse:
    error = APIError(503, "The server has too many open connections; retry shortly",
                     "server_error", code="server_overloaded", headers={"Retry-After": "1"})
    response = error.response()
    response.force_close()
    return response


class _GuardedServer(web.Server):
    max_connections: int

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, max_connections=self.max_connections,
                                     **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer  # same state, our protocol class
        server.max_connections = self._max_connections  # type: ignore[attr-defined]
        return server


def make_runner(app: web.Application, settings: ServerSettings, **kwargs: Any) -> web.AppRunner:
    """The runner `python -m serving` serves `app` with (kwargs go to aiohttp's runner)."""
    return GuardedAppRunner(app, max_connections=settings.max_connections,
                            keepalive_timeout=settings.header_timeout_s, **kwargs)
