"""make_app(state): the routes and the middlewares every request passes through.

Middlewares, outermost first:
- access log + metrics: one log line and one metrics sample per request, whatever happened;
- errors: every failure leaves as PROTOCOL.md's error envelope (500 only for real bugs,
  logged with the request id; the server keeps serving);
- readiness: while models load (or the server drains) only /health, /metrics, /version
  and the chat page (/, /ui/*) answer; the rest get 503 with Retry-After;
- auth: with an API key set, `/v1/*`, `/tokenize` and `/detokenize` need
  `Authorization: Bearer <key>` (they run the models and read user text); /health, /metrics
  and /version stay open for probes and scrapers and show no user data;
- body timeout: a body that has not arrived whole body_timeout_s after the request's head
  fails every read of it, which answers 408 `request_timeout` and closes the connection;
- body cap: a declared Content-Length above max_body_bytes is refused before reading;
- content type: a body is JSON (application/json, a +json type, or no Content-Type) except
  on the upload endpoints, which also take multipart/form-data. A text/plain or form body is
  a 400, as FastAPI-based servers (vLLM) answer: it is also what a browser may send to
  another site without asking, so refusing it keeps cross-site forms out.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from serving import admin, models
from serving.errors import APIError, BodyReadTimeout
from serving.metrics import ServerMetrics
from serving.request_keys import PROMPT, REQUEST_ID, RESPONSE_PREPARED, USAGE
from serving.state import ServerState
from serving.web_ui import add_web_routes

logger = logging.getLogger("serving.access")
error_logger = logging.getLogger("serving.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StateHandler = Callable[[web.Request, ServerState], Awaitable[web.StreamResponse]]

STATE_KEY = web.AppKey("state", ServerState)
METRICS_KEY = web.AppKey("metrics", ServerMetrics)
ALWAYS_OPEN = ("/health", "/metrics", "/version")
PROTECTED_PREFIXES = ("/v1/", "/tokenize", "/detokenize")
# A client's own X-Request-Id is echoed only when it is short and harmless in a log line.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _is_page(path: str) -> bool:
    """The chat page answers while models load: it shows the 503s of the calls it makes."""
    return path == "/" or path.startswith("/ui/")


def _needs_key(path: str) -> bool:
    return path == "/v1" or path.startswith(PROTECTED_PREFIXES)


def _endpoint(request: web.Request) -> str:
    """The route's pattern (e.g. /v1/models/{model_id}), so metric labels stay few."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


def _http_error(request: web.Request, exc: web.HTTPException) -> APIError:
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    if isinstance(exc, web.HTTPNotFound):
        return APIError(404, f"Not found: {request.method} {request.path}", code="not_found")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return APIError(405, f"Method {exc.method} is not allowed here; use "
                        f"{', '.join(sorted(exc.allowed_methods))}", code="method_not_allowed",
                        headers=headers)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return APIError(413, "The request body is too large", code="request_too_large")
    return APIError(exc.status, exc.reason, "invalid_request_error" if exc.status < 500
                    else "server_error", headers=headers)


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    client_id = request.headers.get("X-Request-Id", "")
    request_id = client_id if _CLIENT_ID.fullmatch(client_id) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    start = time.monotonic()
    status = 500  # what the line says if the handler dies after its response began
    state = request.app[STATE_KEY]
    state.in_flight += 1
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:  # a redirect or the like, passed through as aiohttp's own
        status = e.status
        raise
    except asyncio.CancelledError:  # the client went away (or shutdown's grace ran out)
        status = 499  # nginx's "client closed request": neither a success nor our bug
        raise
    finally:
        state.in_flight -= 1
        _log_request(request, status, time.monotonic() - start)


def _log_request(request: web.Request, status: int, seconds: float) -> None:
    request.app[METRICS_KEY].observe(request, _endpoint(request), status, seconds)
    usage = request.get(USAGE) or {}
    logger.info("%s %s %s %d prompt_tokens=%s completion_tokens=%s %.1fms",
                request[REQUEST_ID], request.method, request.path, status,
                usage.get("prompt_tokens", "-"), usage.get("completion_tokens", "-"),
                seconds * 1000)
    if request.app[STATE_KEY].settings.log_prompts and PROMPT in request:
        logger.info("%s prompt=%r", request[REQUEST_ID], request[PROMPT])


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as e:
        return e.response()
    except BodyReadTimeout as e:
        error = APIError(408, str(e), code="request_timeout", headers={"Connection": "close"})
        return error.response()
    except web.HTTPException as e:
        if e.status < 400:  # redirects and the like are answers, not errors
            raise
        return _http_error(request, e).response()
    except Exception:
        if request.get(RESPONSE_PREPARED):
            # The response has begun; a second one cannot follow. aiohttp closes the
            # connection, so the client sees a cut stream rather than a forged ending.
            error_logger.exception("request %s failed mid-response", request.get(REQUEST_ID))
            raise
        error_logger.exception("request %s failed", request.get(REQUEST_ID))
        return APIError(500, "The server had an error while processing your request "
                        f"(request id {request.get(REQUEST_ID)})", "server_error").response()


@web.middleware
async def body_timeout_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    payload = request.content
    if not request.body_exists or payload.is_eof():
        return await handler(request)
    timeout = request.app[STATE_KEY].settings.body_timeout_s

    def expire() -> None:
        if not payload.is_eof():
            payload.set_exception(BodyReadTimeout(
                f"The request body did not arrive within {timeout:g} seconds"))

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    payload.on_eof(timer.cancel)
    try:
        return await handler(request)
    finally:
        timer.cancel()


@web.middleware
async def ready_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if not request.app[STATE_KEY].ready and path not in ALWAYS_OPEN and not _is_page(path):
        raise APIError(503, "The server is not ready: models are loading or it is shutting "
                       "down", "server_error", code="not_ready", headers={"Retry-After": "5"})
    return await handler(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.app[STATE_KEY].settings.api_key
    if key and _needs_key(request.path):
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        # compare_digest on bytes: constant time, and no TypeError on non-ASCII input.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode("utf-8", "surrogateescape"), key.encode()):
            raise APIError(401, "Incorrect or missing API key: send it as "
                           "`Authorization: Bearer <key>`", "authentication_error",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


@web.middleware
async def body_size_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    limit = request.app[STATE_KEY].settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise APIError(413, f"The request body is too large ({request.content_length} bytes; "
                       f"the limit is {limit})", code="request_too_large")
    return await handler(request)


MULTIPART_PATHS = ("/v1/files", "/v1/create/rag")


def _is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json"))


@web.middleware
async def content_type_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.body_exists and "Content-Type" in request.headers:
        ctype = request.content_type  # lower-cased, parameters (charset...) stripped
        multipart = ctype.startswith("multipart/") and request.path in MULTIPART_PATHS
        if not (_is_json_type(ctype) or multipart):
            upload = request.path in MULTIPART_PATHS
            raise APIError(400, f"Unsupported Content-Type {ctype!r}: send the body as JSON "
                           "with `Content-Type: application/json`"
                           + (" or upload the file as multipart/form-data" if upload else ""),
                           param="file" if upload else None, code="unsupported_content_type")
    return await handler(request)


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Runs as any response's headers go out, streamed ones included."""
    request[RESPONSE_PREPARED] = True
    if REQUEST_ID in request:
        response.headers["X-Request-Id"] = request[REQUEST_ID]


def _bind(handler: StateHandler, state: ServerState) -> Handler:
    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request, state)
    return route


async def _chat(request: web.Request, state: ServerState) -> web.StreamResponse:
    from serving.chat import create_chat_completion  # imported late: a sibling module

    return await create_chat_completion(request, state)


async def _completions(request: web.Request, state: ServerState) -> web.StreamResponse:
    from serving.completions import create_completion

    return await create_completion(request, state)


async def _embeddings(request: web.Request, state: ServerState) -> web.StreamResponse:
    from serving.embeddings import create_embeddings

    return await create_embeddings(request, state)


def _add_retrieval_routes(app: web.Application, state: ServerState) -> None:
    from serving.retrieval import handlers as rag

    r = app.router
    r.add_post("/v1/files", _bind(rag.upload_file, state))
    r.add_get("/v1/files", _bind(rag.list_files, state))
    r.add_get("/v1/files/{file_id}", _bind(rag.get_file, state))
    r.add_delete("/v1/files/{file_id}", _bind(rag.delete_file, state))
    r.add_post("/v1/chunks", _bind(rag.chunks, state))
    r.add_post("/v1/create/rag", _bind(rag.create_rag, state))
    r.add_post("/v1/retrieve", _bind(rag.retrieve, state))


def _add_responses_routes(app: web.Application, state: ServerState) -> None:
    from serving.responses_api.handlers import add_routes as add_responses

    add_responses(app, state)


async def _metrics(request: web.Request, state: ServerState) -> web.StreamResponse:
    return request.app[METRICS_KEY].render(state)


def add_routes(app: web.Application, state: ServerState) -> None:
    r = app.router
    r.add_post("/v1/chat/completions", _bind(_chat, state))
    r.add_post("/v1/completions", _bind(_completions, state))
    r.add_post("/v1/embeddings", _bind(_embeddings, state))
    _add_retrieval_routes(app, state)
    _add_responses_routes(app, state)
    r.add_get("/v1/models", _bind(models.list_models, state))
    # LlamaEdge's documented example lists models with `curl -X POST .../v1/models`.
    r.add_post("/v1/models", _bind(models.list_models, state))
    r.add_get("/v1/models/{model_id:.+}", _bind(models.get_model, state))  # ids may hold '/'
    r.add_get("/health", _bind(admin.health, state))
    r.add_get("/metrics", _bind(_metrics, state))
    r.add_get("/version", _bind(admin.version, state))
    r.add_post("/tokenize", _bind(admin.tokenize, state))
    r.add_post("/detokenize", _bind(admin.detokenize, state))
    add_web_routes(app)  # the chat page at /


def make_app(state: ServerState) -> web.Application:
    app = web.Application(
        client_max_size=state.settings.max_body_bytes,
        middlewares=[access_log_middleware, error_middleware, body_timeout_middleware,
                     ready_middleware, auth_middleware, body_size_middleware,
                     content_type_middleware],
    )
    app[STATE_KEY] = state
    app[METRICS_KEY] = ServerMetrics()
    app.on_response_prepare.append(_on_prepare)
    add_routes(app, state)
    return app
