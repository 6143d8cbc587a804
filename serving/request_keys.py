"""Typed per-request values shared by the handlers and the middlewares (aiohttp RequestKeys)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

REQUEST_ID = web.RequestKey("request_id", str)
RESPONSE_PREPARED = web.RequestKey("response_prepared", bool)
PROMPT = web.RequestKey("prompt", object)  # str or list[str]; logged only with --log-prompts
MODEL = web.RequestKey("model", str)  # the served model actually used (after any fallback)
USAGE = web.RequestKey("usage", dict[str, Any])  # {"prompt_tokens", "completion_tokens"}
TTFT_S = web.RequestKey("ttft_s", float)
TOKEN_TIMES = web.RequestKey("token_times", list[float])  # time.monotonic() per output token
