"""A lean GGUF reader: metadata as plain Python values, tensors as memory-mapped bytes.

gguf.GGUFReader builds numpy views for every metadata string (seconds and ~150 MiB for a
49k-token vocabulary); reading the header directly costs a fraction of either. Tensor
payloads stay in the file's memory map and are dequantized by the `gguf` package.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?",
          10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (rows first), i.e. GGUF's dims reversed
    qtype: GGMLQuantizationType
    offset: int  # from the start of the file

    @property
    def row_bytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.qtype]
        return self.shape[-1] // block * size


class GGUFFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            if f.read(4) != MAGIC:
                raise ValueError(f"{path} is not a GGUF file")
            version, num_tensors, num_kv = struct.unpack("<IQQ", f.read(20))
            if version not in (2, 3):
                raise ValueError(f"{path}: GGUF version {version} is not supported")
            self.metadata: dict[str, Any] = {}
            for _ in range(num_kv):
                key = _read_str(f)
                self.metadata[key] = _read_value(f, _unpack(f, "<I"))
            raw = [_read_tensor_info(f) for _ in range(num_tensors)]
            align = int(self.metadata.get("general.alignment", 32))
            data_start = -(-f.tell() // align) * align
        self.tensors = [TensorInfo(n, s, t, data_start + o) for n, s, t, o in raw]
        # Plain reads rather than a memory map: mapped pages would count against the
        # process until unmapped, and loading reads each byte once anyway.
        self._file = open(path, "rb")  # noqa: SIM115 -- held until close()

    def raw(self, info: TensorInfo, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a tensor: typed for float types, bytes for quantized ones."""
        stop = min(stop, self.num_rows(info))
        self._file.seek(info.offset + start * info.row_bytes)
        size = (stop - start) * info.row_bytes
        data = self._file.read(size)
        if len(data) != size:
            raise ValueError(f"{self.path}: tensor {info.name} runs past the end of the file")
        data = np.frombuffer(data, dtype=np.uint8).reshape(stop - start, info.row_bytes)
        if info.qtype == GGMLQuantizationType.F32:
            return data.view(np.float32)
        if info.qtype == GGMLQuantizationType.F16:
            return data.view(np.float16)
        return data

    def num_rows(self, info: TensorInfo) -> int:
        return int(np.prod(info.shape[:-1], dtype=np.int64))

    def close(self) -> None:
        self._file.close()


def _unpack(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("unexpected end of file")
    return struct.unpack(fmt, data)[0]


def _read_str(f: BinaryIO) -> str:
    length = _unpack(f, "<Q")
    if length > 1 << 30:  # a corrupt length would otherwise ask for exabytes
        raise ValueError(f"string length {length} is not plausible")
    data = f.read(length)
    if len(data) != length:
        raise ValueError("unexpected end of file in a string")
    return data.decode("utf-8", errors="replace")


def _read_value(f: BinaryIO, vtype: int) -> Any:
    if vtype in _SCALARS:
        return _unpack(f, _SCALARS[vtype])
    if vtype == _STRING:
        return _read_str(f)
    if vtype == _ARRAY:
        etype, count = _unpack(f, "<I"), _unpack(f, "<Q")
        if count > 1 << 31:
            raise ValueError(f"array length {count} is not plausible")
        if etype in _NUMPY:  # numbers in one read
            dtype = np.dtype(_NUMPY[etype])
            return np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype).tolist()
        return [_read_value(f, etype) for _ in range(count)]
    raise ValueError(f"unknown GGUF value type {vtype}")


def _read_tensor_info(f: BinaryIO) -> tuple[str, tuple[int, ...], GGMLQuantizationType, int]:
    name = _read_str(f)
    dims = [_unpack(f, "<Q") for _ in range(_unpack(f, "<I"))]
    qtype = GGMLQuantizationType(_unpack(f, "<I"))
    return name, tuple(reversed(dims)), qtype, _unpack(f, "<Q")
