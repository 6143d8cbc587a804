"""Uploaded documents, kept under <data_dir>/files: one content file + one JSON record each."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
_FILE_ID = re.compile(r"file_[0-9a-f]{32}")


class FileError(ValueError):
    """A client's mistake about a file (bad upload, unknown id); the handler says which."""

    def __init__(self, message: str, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class FileRecord:
    """OpenAI's (and LlamaEdge's) file object."""

    id: str
    bytes: int
    created_at: int
    filename: str
    object: str = "file"
    purpose: str = "assistants"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _paths(self, file_id: str) -> tuple[Path, Path]:
        if not _FILE_ID.fullmatch(file_id):  # also keeps ids from naming paths outside root
            raise FileError(f"No file with id {file_id!r}", 404, "file_not_found")
        return self.root / f"{file_id}.json", self.root / f"{file_id}.data"

    def save(self, filename: str, content: bytes) -> FileRecord:
        check_upload(filename, content)
        record = FileRecord(f"file_{uuid.uuid4().hex}", len(content), int(time.time()),
                            Path(filename).name)
        meta, data = self._paths(record.id)
        data.write_bytes(content)
        meta.write_text(json.dumps(record.to_dict()))  # written last: its presence means "complete"
        return record

    def get(self, file_id: str) -> FileRecord:
        meta, _ = self._paths(file_id)
        if not meta.is_file():
            raise FileError(f"No file with id {file_id!r}", 404, "file_not_found")
        return FileRecord(**json.loads(meta.read_text()))

    def read_text(self, file_id: str) -> str:
        self.get(file_id)
        return self._paths(file_id)[1].read_bytes().decode("utf-8")

    def list(self) -> list[FileRecord]:
        records = [FileRecord(**json.loads(p.read_text())) for p in self.root.glob("file_*.json")]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def delete(self, file_id: str) -> FileRecord:
        record = self.get(file_id)
        meta, data = self._paths(file_id)
        meta.unlink()
        data.unlink(missing_ok=True)
        return record
