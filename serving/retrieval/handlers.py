"""The retrieval endpoints: /v1/files (upload, list, get, delete), /v1/chunks,
/v1/create/rag and /v1/retrieve, in LlamaEdge's shapes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from serving.errors import APIError, bad_request
from serving.offload import off_loop
from serving.request_keys import MODEL, PROMPT, USAGE
from serving.requests import parse_request
from serving.retrieval.files import FileError
from serving.retrieval.requests import (
    ChunksRequest,
    CreateRagRequest,
    RetrieveRequest,
    last_user_text,
)
from serving.retrieval.service import RetrievalService
from serving.retrieval.store import CollectionNotFound, StoreUnavailable
from serving.state import ServerState

# Service errors that start with one of these are about that request field.
_NAMED_PARAMS = {"chunk_capacity", "chunk_overlap", "collection_name"}


def service(state: ServerState) -> RetrievalService:
    if state.retrieval is None:
        raise bad_request("Retrieval is not enabled on this server: it serves no embedding "
                          "model (started with --no-embedding-model?)", code="retrieval_disabled")
    return state.retrieval


@contextlib.contextmanager
def client_errors(param: str | None = None) -> Iterator[None]:
    """The service's exceptions as the API's errors, for the calls inside the block."""
    try:
        yield
    except FileError as e:
        raise APIError(e.status, str(e), param="id" if e.status == 404 else "file",
                       code=e.code) from None
    except StoreUnavailable as e:
        raise APIError(503, str(e), "server_error", code="vector_store_unavailable",
                       headers={"Retry-After": "5"}) from None
    except CollectionNotFound as e:
        raise APIError(404, f"Collection {e.args[0]!r} does not exist; create it with "
                       "POST /v1/create/rag", param="collection_name",
                       code="collection_not_found") from None
    except ValueError as e:
        word = str(e).split(" ", 1)[0]
        raise bad_request(str(e), word if word in _NAMED_PARAMS else param) from None


# ---- files -----------------------------------------------------------------------------------


async def read_multipart(request: web.Request) -> tuple[str, bytes, dict[str, str]]:
    """(filename, content, other text fields) of a multipart/form-data upload."""
    if not request.content_type.startswith("multipart/"):
        raise bad_request("Upload the document as multipart/form-data with a `file` field",
                          "file")
    try:
        reader = await request.multipart()
        upload: tuple[str, bytes] | None = None
        fields: dict[str, str] = {}
        async for part in reader:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.name == "file":
                upload = (part.filename or "", await part.read())
            else:
                fields[part.name] = await part.text()
    except (ValueError, AssertionError, HttpProcessingError) as e:  # a malformed body
        raise bad_request(f"The multipart body could not be read: {e}", "file") from None
    if upload is None:
        raise bad_request("The upload has no `file` field", "file")
    return upload[0], upload[1], fields


async def upload_file(request: web.Request, state: ServerState) -> web.Response:
    svc = service(state)
    filename, content, _ = await read_multipart(request)
    with client_errors("file"):  # decoding and writing a large file: off the loop
        record = await off_loop(svc.files.save, filename, content)
    return web.json_response(record.to_dict())


async def list_files(request: web.Request, state: ServerState) -> web.Response:
    records = await off_loop(service(state).files.list)
    # OpenAI's list shape; every file comes in one page.
    return web.json_response({"object": "list", "data": [r.to_dict() for r in records],
                              "first_id": records[0].id if records else None,
                              "last_id": records[-1].id if records else None,
                              "has_more": False})


async def get_file(request: web.Request, state: ServerState) -> web.Response:
    svc = service(state)
    with client_errors():
        record = svc.files.get(request.match_info["file_id"])
    return web.json_response(record.to_dict())


async def delete_file(request: web.Request, state: ServerState) -> web.Response:
    svc = service(state)
    with client_errors():
        record, removed = await svc.delete_file(request.match_info["file_id"])
    return web.json_response({"id": record.id, "object": "file", "deleted": True,
                              "points_deleted": removed})


# ---- chunks and ingestion ----------------------------------------------------------------------


async def chunks(request: web.Request, state: ServerState) -> web.Response:
    svc = service(state)
    req = await off_loop(parse_request, ChunksRequest, await request.read())
    with client_errors():
        record = svc.files.get(req.id)
    if req.filename is not None and req.filename != record.filename:
        raise bad_request(f"File {req.id!r} is named {record.filename!r}, not {req.filename!r}",
                          "filename")
    with client_errors("chunk_capacity"):
        pieces = await off_loop(svc.chunk_file, req.id, req.chunk_capacity, req.chunk_overlap)
    return web.json_response({"id": record.id, "filename": record.filename, "chunks": pieces})


def _form_int(fields: dict[str, str], name: str) -> int | None:
    if name not in fields:
        return None
    try:
        return int(fields[name])
    except ValueError:
        raise bad_request(f"Invalid value for `{name}`: expected an integer", name) from None


async def create_rag(request: web.Request, state: ServerState) -> web.Response:
    """A multipart upload (file + optional chunk_capacity, chunk_overlap, collection_name
    fields), or JSON naming a file uploaded before: chunk, embed and store it (again: its
    points in that collection are replaced)."""
    svc = service(state)
    if request.content_type.startswith("multipart/"):
        filename, content, fields = await read_multipart(request)
        opts = parse_request(CreateRagRequest, {
            "id": "", "collection_name": fields.get("collection_name"),
            "chunk_capacity": _form_int(fields, "chunk_capacity"),
            "chunk_overlap": _form_int(fields, "chunk_overlap")})
        # Check the options before storing anything, so a refused call leaves no file behind.
        with client_errors("chunk_capacity"):
            svc.check_options(opts.collection_name, opts.chunk_capacity, opts.chunk_overlap)
        with client_errors():  # the file is listed once ingested; a failure leaves none
            done = await svc.upload_and_ingest(filename, content, opts.collection_name,
                                               opts.chunk_capacity, opts.chunk_overlap)
    else:
        opts = await off_loop(parse_request, CreateRagRequest, await request.read())
        with client_errors():
            done = await svc.ingest(opts.id, opts.collection_name, opts.chunk_capacity,
                                    opts.chunk_overlap)
    request[MODEL] = svc.encoder.name
    request[USAGE] = {"prompt_tokens": done.prompt_tokens, "completion_tokens": 0}
    return web.json_response({
        "id": done.file.id, "filename": done.file.filename, "object": "rag",
        "collection_name": done.collection, "chunks": done.chunks, "points": done.points,
        "model": svc.encoder.name,
        "usage": {"prompt_tokens": done.prompt_tokens, "total_tokens": done.prompt_tokens},
    })


# ---- search ----------------------------------------------------------------------------------


def check_model(state: ServerState, svc: RetrievalService, model: str | None) -> None:
    if model is None:
        return
    target = state.resolve_embedder(model)  # 404 for an unknown name
    if target is not svc.encoder:
        raise bad_request(f"Retrieval embeds with {svc.encoder.name}, not {model}", "model")


async def retrieve(request: web.Request, state: ServerState) -> web.Response:
    svc = service(state)
    req = await off_loop(parse_request, RetrieveRequest, await request.read())
    check_model(state, svc, req.model)
    query = last_user_text(req.messages)
    request[PROMPT] = query
    limit = req.limit or svc.settings.limit
    threshold = (svc.settings.score_threshold if req.score_threshold is None
                 else req.score_threshold)
    with client_errors("collection_name"):
        hits, tokens = await svc.retrieve(query, req.collection_name, limit, threshold)
    request[MODEL] = svc.encoder.name
    request[USAGE] = {"prompt_tokens": tokens, "completion_tokens": 0}
    return web.json_response({"points": [{"source": h.source, "score": h.score} for h in hits],
                              "limit": limit, "score_threshold": threshold})
