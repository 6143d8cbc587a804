"""Server-sent events: `data: <json>\\n\\n` per event, `data: [DONE]\\n\\n` at the end, and
the streamed response that sends an async generator of chunks."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from aiohttp import web

from serving.errors import APIError
from serving.request_keys import REQUEST_ID

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        status=200,
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                 "Connection": "keep-alive"},
    )
    await response.prepare(request)
    return response


async def stream_response(request: web.Request, chunks: AsyncGenerator[dict[str, Any], None],
                          to_api_error: Callable[[Exception], APIError]) -> web.StreamResponse:
    """Send `chunks` as SSE. The first chunk is awaited before the 200 goes out, so errors
    at admission are still plain 4xx answers; later ones travel as an error event."""
    async with aclosing(chunks):
        try:
            first = await anext(chunks)
        except (ValueError, RuntimeError) as e:
            raise to_api_error(e) from None
        response = await open_stream(request)
        try:
            await response.write(event(first))
            async for chunk in chunks:
                await response.write(event(chunk))
            error = None
        except ConnectionResetError:  # the client went away: closing `chunks` aborts
            return response
        except Exception as e:  # a response has begun: report in-band, keep serving
            if not isinstance(e, (APIError, ValueError)):
                logger.exception("stream %s failed", request.get(REQUEST_ID))
            error = to_api_error(e)
    try:
        if error is not None:
            await response.write(event(error.body()))
        await response.write(DONE)
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response
