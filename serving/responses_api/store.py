"""Stored responses (`store: true`), one JSON file each under <data_dir>/responses.

A record holds the response object as the API shows it and the conversation that led to it
(every input item of the chain, without instructions), so that a follow-up naming it as
`previous_response_id` needs only this one file, whatever happened to its ancestors. Files
are replaced whole (a temporary file renamed over the old), so a crash leaves either no
record or a whole one. Without a data directory (the Python API, tests) records live in
memory and go with the process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.errors import APIError

_ID = re.compile(r"resp_[0-9a-f]{32}")  # also keeps ids from naming paths outside the folder


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def not_found(response_id: str, param: str | None = None) -> APIError:
    """404 for GET/DELETE of an unknown id, or (param set) a previous_response_id."""
    if param:
        return APIError(404, f"Previous response with id '{response_id}' not found.",
                        param=param, code="previous_response_not_found")
    return APIError(404, f"Response with id '{response_id}' not found.",
                    code="response_not_found")


@dataclass
class StoredResponse:
    response: dict[str, Any]  # the response object, as GET returns it
    context: list[dict[str, Any]]  # the input items of the whole chain up to this response

    def to_json(self) -> bytes:
        return json.dumps({"response": self.response, "context": self.context},
                          ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> StoredResponse:
        raw = json.loads(data)
        return cls(raw["response"], raw["context"])


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # created on the first write only
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")  # unique: writers never meet
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ResponseStore:
    """get / put / delete by response id; 404 `response_not_found` for an unknown one."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._memory: dict[str, bytes] = {}

    def _path(self, response_id: str) -> Path | None:
        return None if self.root is None else self.root / f"{response_id}.json"

    async def get(self, response_id: str, param: str | None = None) -> StoredResponse:
        data = None
        if _ID.fullmatch(response_id):
            path = self._path(response_id)
            if path is None:
                data = self._memory.get(response_id)
            else:
                data = await asyncio.to_thread(_read, path)
        if data is None:
            raise not_found(response_id, param)
        return StoredResponse.from_json(data)

    async def put(self, record: StoredResponse) -> None:
        response_id = record.response["id"]
        if not _ID.fullmatch(response_id):
            raise ValueError(f"not a response id: {response_id!r}")
        path = self._path(response_id)
        if path is None:
            self._memory[response_id] = record.to_json()
        else:
            await asyncio.to_thread(_write_atomically, path, record.to_json())

    async def delete(self, response_id: str) -> None:
        found = False
        if _ID.fullmatch(response_id):
            path = self._path(response_id)
            if path is None:
                found = self._memory.pop(response_id, None) is not None
            else:
                found = await asyncio.to_thread(_unlink, path)
        if not found:
            raise not_found(response_id)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
