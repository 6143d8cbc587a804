# ruff: noqa: F811  (pytest fixtures imported from embedding_support)
"""Clear 4xx errors from the retrieval endpoints (tiny random encoder; no ranking here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine import AsyncEngine
from tests.serving.conftest import AUTH, MODEL, Api, assert_error
from tests.serving.embedding_support import (
    ENCODER,
    close_all,
    emb_api,  # noqa: F401
    make_state_api,
)

DOC = b"the cat and the dog\n\nparis is a city on a river\n\nmusic and a piano\n"
USER = [{"role": "user", "content": "where is paris"}]


@pytest.fixture
async def api(aiohttp_client: Any, engine: AsyncEngine, tiny_bert_dir: Path,
              tmp_path: Path) -> AsyncIterator[Api]:
    api, closers = await make_state_api(aiohttp_client, engine, tiny_bert_dir,
                                        data_dir=tmp_path / "data")
    yield api
    await close_all(closers)


async def post_form(api: Api, path: str, file: tuple[str, bytes] | None = None,
                    **fields: str) -> Any:
    form = aiohttp.FormData()
    for k, v in fields.items():
        form.add_field(k, v)
    if file is not None:
        form.add_field("file", file[1], filename=file[0], content_type="text/plain")
    else:
        form.add_field("other", "x")
    async with api.client.post(path, data=form, headers=AUTH) as r:
        from tests.serving.conftest import Response

        return Response(r.status, r.headers, await r.text())


async def uploaded(api: Api) -> str:
    resp = await post_form(api, "/v1/files", ("doc.txt", DOC))
    assert resp.status == 200, resp.text
    return resp.json["id"]


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("doc.pdf", b"%PDF-1.4", "text or markdown"),
    ("doc.txt", b"\xff\xfe\x00bad", "UTF-8"),
    ("doc.md", b"  \n\n ", "empty"),
    ("", b"hello", "text or markdown"),
])
async def test_malformed_uploads(api: Api, name: str, content: bytes, needle: str) -> None:
    resp = await post_form(api, "/v1/files", (name, content))
    assert needle in assert_error(resp, 400, param="file")["message"]
    assert (await api.get("/v1/files")).json["data"] == []


async def test_upload_needs_multipart_with_a_file(api: Api) -> None:
    assert_error(await api.post("/v1/files", {"file": "x"}), 400, param="file")
    assert_error(await post_form(api, "/v1/files"), 400, param="file")
    resp = await api.post("/v1/files", raw=b"--xx\r\nbroken", headers={
        "Content-Type": "multipart/form-data; boundary=yy"})
    assert_error(resp, 400, param="file")


async def test_unknown_files(api: Api) -> None:
    for fid in ("file_" + "0" * 32, "..%2F..%2Fetc", "nope"):
        assert_error(await api.get(f"/v1/files/{fid}"), 404, code="file_not_found")
        assert_error(await api.request("DELETE", f"/v1/files/{fid}"), 404,
                     code="file_not_found")
    missing = "file_" + "1" * 32
    assert_error(await api.post("/v1/chunks", {"id": missing}), 404, code="file_not_found")
    assert_error(await api.post("/v1/create/rag", {"id": missing}), 404, code="file_not_found")


async def test_chunk_options(api: Api) -> None:
    fid = await uploaded(api)
    ok = await api.post("/v1/chunks", {"id": fid, "chunk_capacity": 8, "chunk_overlap": 2})
    assert ok.status == 200 and ok.json["filename"] == "doc.txt" and ok.json["chunks"]
    err = assert_error(await api.post("/v1/chunks", {"id": fid, "chunk_capacity": 47}), 400,
                       param="chunk_capacity")
    assert "46" in err["message"]  # the tiny encoder takes 48 tokens, 2 of them special
    assert_error(await api.post("/v1/chunks", {"id": fid, "chunk_capacity": 4,
                                               "chunk_overlap": 4}), 400)
    assert_error(await api.post("/v1/chunks", {"id": fid, "chunk_capacity": 0}), 400,
                 param="chunk_capacity")
    assert_error(await api.post("/v1/chunks", {"id": fid, "filename": "other.txt"}), 400,
                 param="filename")
    assert_error(await api.post("/v1/chunks", {}), 400, param="id")


async def test_create_rag_refusals_store_nothing(api: Api) -> None:
    resp = await post_form(api, "/v1/create/rag", ("doc.txt", DOC), chunk_capacity="abc")
    assert_error(resp, 400, param="chunk_capacity")
    resp = await post_form(api, "/v1/create/rag", ("doc.txt", DOC), collection_name="a/b")
    assert_error(resp, 400)
    assert (await api.get("/v1/files")).json["data"] == []
    resp = await post_form(api, "/v1/create/rag", ("doc.txt", DOC), collection_name="c-1")
    assert resp.status == 200, resp.text
    assert resp.json["points"] == resp.json["chunks"] >= 1
    assert resp.json["collection_name"] == "c-1"


async def test_retrieve_errors(api: Api) -> None:
    resp = await api.post("/v1/retrieve", {"messages": USER, "collection_name": "missing"})
    assert_error(resp, 404, param="collection_name", code="collection_not_found")
    resp = await api.post("/v1/retrieve", {"messages": USER})  # "default" not created yet
    assert_error(resp, 404, code="collection_not_found")
    assert_error(await api.post("/v1/retrieve", {"messages": []}), 400, param="messages")
    assert_error(await api.post("/v1/retrieve", {}), 400, param="messages")
    resp = await api.post("/v1/retrieve", {"messages": [{"role": "system", "content": "hi"}]})
    assert_error(resp, 400, param="messages")
    resp = await api.post("/v1/retrieve", {"messages": [{"role": "user", "content": " "}]})
    assert_error(resp, 400, param="messages")
    resp = await api.post("/v1/retrieve", {"messages": USER, "limit": 0})
    assert_error(resp, 400, param="limit")
    resp = await api.post("/v1/retrieve", {"messages": USER, "collection_name": "a b"})
    assert_error(resp, 400, param="collection_name")
    resp = await api.post("/v1/retrieve", {"messages": USER, "model": MODEL})
    assert_error(resp, 400, param="model")
    resp = await api.post("/v1/retrieve", {"messages": USER, "model": "nope"})
    assert_error(resp, 404, code="model_not_found")
    fid = await uploaded(api)
    assert (await api.post("/v1/create/rag", {"id": fid, "chunk_capacity": 8})).status == 200
    resp = await api.post("/v1/retrieve", {"messages": USER, "model": ENCODER,
                                           "score_threshold": -1.0, "limit": 2})
    assert resp.status == 200 and len(resp.json["points"]) == 2


async def test_retrieval_off_without_a_store(emb_api: Api) -> None:
    for resp in (await emb_api.get("/v1/files"),
                 await emb_api.post("/v1/retrieve", {"messages": USER}),
                 await emb_api.chat(messages=USER, max_tokens=1, rag=True)):
        assert_error(resp, 400, code="retrieval_disabled")
    # Without the field the chat works as before.
    assert (await emb_api.chat(messages=USER, max_tokens=1)).status == 200


def raw_upload(filename_header: str, content: bytes = DOC) -> bytes:
    """A multipart body written by hand: the client libraries refuse odd filenames."""
    return (b"--bnd\r\nContent-Disposition: form-data; name=\"file\"; "
            + filename_header.encode("latin-1") + b"\r\nContent-Type: text/plain\r\n\r\n"
            + content + b"\r\n--bnd--\r\n")


@pytest.mark.parametrize("header", [
    "filename=\"doc\x00.txt\"", "filename=\"doc\x7f.txt\"", "filename=\"a\x01b.md\"",
    "filename*=UTF-8''doc%00.txt", "filename*=UTF-8''doc%7F.txt",
    "filename*=UTF-8''doc%ED%A0%80.txt",
], ids=["NUL", "DEL", "SOH", "NUL escaped", "DEL escaped", "surrogate escaped"])
async def test_control_characters_in_a_filename_are_400(api: Api, header: str) -> None:
    for path in ("/v1/files", "/v1/create/rag"):
        resp = await api.post(path, raw=raw_upload(header), headers={
            "Content-Type": "multipart/form-data; boundary=bnd"})
        assert_error(resp, 400, param="file")
    assert (await api.get("/v1/files")).json["data"] == []


async def test_lone_surrogates_in_retrieval_json_are_400(api: Api) -> None:
    resp = await api.post("/v1/retrieve", {"messages": [{"role": "user", "content": "\ud800"}]})
    assert_error(resp, 400, param="messages[0].content", code="invalid_unicode")
    resp = await api.post("/v1/chunks", {"id": "file_\udfff"})
    assert_error(resp, 400, param="id", code="invalid_unicode")
    deep = '{"messages": ' + "[" * 300 + "]" * 300 + "}"
    assert_error(await api.post("/v1/retrieve", raw=deep), 400, code="json_too_deep")
    assert_error(await api.post("/v1/create/rag", raw=deep), 400, code="json_too_deep")
