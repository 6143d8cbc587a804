"""Uploaded documents, kept under <data_dir>/files: one content file + one JSON record each.

A record also says where the file's ingestion stands (see service.py), which the API's file
object does not show: `status` is `ready` for a file the API lists, `ingesting` for one that
/v1/create/rag uploaded and has not answered for yet, `deleting` for one being deleted; and
per collection, the ingestion whose points are searchable (`ready`) and the one being
written (`ingesting`). Records are replaced whole (a temporary file renamed over the old), so
a crash leaves either the old record or the new one.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
_FILE_ID = re.compile(r"file_[0-9a-f]{32}")

READY, INGESTING, DELETING = "ready", "ingesting", "deleting"
_PUBLIC = ("id", "bytes", "created_at", "filename", "object", "purpose")


class FileError(ValueError):
    """A client's mistake about a file (bad upload, unknown id); the handler says which."""

    def __init__(self, message: str, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Ingestion:
    """One collection's state for one file: digests of ingestions (service.py)."""

    ready: str | None = None  # whose points searches may return; None: none yet
    ingesting: str | None = None  # set while points not of `ready` may exist


@dataclass(frozen=True)
class FileRecord:
    """OpenAI's (and LlamaEdge's) file object, plus the ingestion state."""

    id: str
    bytes: int
    created_at: int
    filename: str
    object: str = "file"
    purpose: str = "assistants"
    status: str = READY
    collections: dict[str, Ingestion] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """The file object as the API shows it. Only ready files are shown, and OpenAI's
        (deprecated, still required) `status` calls those "processed"."""
        return {**{k: getattr(self, k) for k in _PUBLIC}, "status": "processed"}

    def with_collection(self, name: str, state: Ingestion, **changes: Any) -> FileRecord:
        collections = dict(self.collections)
        if state == Ingestion():  # nothing stored and nothing under way: forget the name
            collections.pop(name, None)
        else:
            collections[name] = state
        return replace(self, collections=collections, **changes)

    @classmethod
    def from_json(cls, text: str) -> FileRecord:
        raw = json.loads(text)  # records from before the ingestion state: ready, no collection
        known = {f.name for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k in known}
        raw["collections"] = {k: Ingestion(**v) for k, v in raw.get("collections", {}).items()}
        return cls(**raw)


def _printable_name(filename: str) -> bool:
    """No control characters (NUL, DEL, ...) and no lone surrogates: the name goes into
    records, logs and responses."""
    if any(c < " " or c == "\x7f" for c in filename):
        return False
    try:
        filename.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_upload(filename: str, content: bytes) -> str:
    """The text of an acceptable upload: a non-empty UTF-8 .txt or .md file with a
    printable name."""
    if not _printable_name(filename):
        raise FileError(f"The file name {filename!r} holds control characters or invalid "
                        "Unicode; rename the file")
    name = Path(filename).name
    if not name:
        raise FileError("The upload has no file name (or one that could not be read); upload "
                        f"a text or markdown file, named with {', '.join(TEXT_SUFFIXES)}")
    if not name.lower().endswith(TEXT_SUFFIXES):
        raise FileError(f"file {filename!r} is not a text or markdown file; upload one ending "
                        f"in {', '.join(TEXT_SUFFIXES)}")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise FileError(f"file {name!r} is not UTF-8 text") from None
    if not text.strip():
        raise FileError(f"file {name!r} is empty")
    return text


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _paths(self, file_id: str) -> tuple[Path, Path]:
        if not _FILE_ID.fullmatch(file_id):  # also keeps ids from naming paths outside root
            raise FileError(f"No file with id {file_id!r}", 404, "file_not_found")
        return self.root / f"{file_id}.json", self.root / f"{file_id}.data"

    def save(self, filename: str, content: bytes, status: str = READY) -> FileRecord:
        check_upload(filename, content)
        record = FileRecord(f"file_{uuid.uuid4().hex}", len(content), int(time.time()),
                            Path(filename).name, status=status)
        _, data = self._paths(record.id)
        _write_atomically(data, content)
        return self.put(record)  # written last: a content file without one is debris

    def put(self, record: FileRecord) -> FileRecord:
        """Replace the record (atomically); returns it."""
        meta, _ = self._paths(record.id)
        body = asdict(record)
        _write_atomically(meta, json.dumps(body).encode())
        return record

    def load(self, file_id: str) -> FileRecord:
        """The record whatever its status (404 when there is none)."""
        meta, _ = self._paths(file_id)
        if not meta.is_file():
            raise FileError(f"No file with id {file_id!r}", 404, "file_not_found")
        return FileRecord.from_json(meta.read_text())

    def get(self, file_id: str) -> FileRecord:
        """A file the API shows: one being made by /v1/create/rag or deleted is not found."""
        record = self.load(file_id)
        if record.status != READY:
            raise FileError(f"No file with id {file_id!r}", 404, "file_not_found")
        return record

    def read_text(self, file_id: str) -> str:
        self.load(file_id)
        return self._paths(file_id)[1].read_bytes().decode("utf-8")

    def _read_all(self) -> tuple[list[FileRecord], list[str]]:
        """(the records that parse, the ids of those that do not)."""
        records, bad = [], []
        for p in self.root.glob("file_*.json"):
            try:
                records.append(FileRecord.from_json(p.read_text()))
            except (ValueError, TypeError, AttributeError):  # e.g. cut short by a crash
                bad.append(p.stem)
        return sorted(records, key=lambda r: (r.created_at, r.id)), bad

    def records(self) -> list[FileRecord]:
        """Every readable record, whatever its status, oldest first."""
        return self._read_all()[0]

    def unreadable(self) -> list[str]:
        return self._read_all()[1]

    def list(self) -> list[FileRecord]:
        return [r for r in self.records() if r.status == READY]

    def delete(self, file_id: str) -> None:
        meta, data = self._paths(file_id)
        meta.unlink(missing_ok=True)
        data.unlink(missing_ok=True)

    def sweep(self) -> list[Path]:
        """Remove what a crash during save or put leaves: temporary files, and content
        files without a record. Run at start-up only (a save in progress looks the same)."""
        debris = list(self.root.glob("*.tmp"))
        debris += [p for p in self.root.glob("file_*.data")
                   if not p.with_suffix(".json").is_file()]
        for p in debris:
            p.unlink(missing_ok=True)
        return debris
