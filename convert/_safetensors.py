"""A lazy, memory-mapped safetensors reader that also understands BF16 (numpy does not)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InputError

__all__ = ["SafetensorsFile", "bf16_to_f32", "f32_to_bf16"]

_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "I64": np.int64,
    "I32": np.int32,
}


def bf16_to_f32(raw: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """BF16 bit patterns to float32 (exact)."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """float32 to BF16 bit patterns, rounding to nearest even as PyTorch does."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + (0x7FFF + ((bits >> 16) & 1))
    return (rounded >> 16).astype(np.uint16)


class SafetensorsFile:
    """Tensors of one ``.safetensors`` file, read on demand from a memory map."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            size = path.stat().st_size
            with path.open("rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    raise InputError(path, "truncated: no safetensors header", "save it again")
                (n,) = struct.unpack("<Q", head)
                if n > size - 8:
                    raise InputError(path, "truncated or not a safetensors file", "save it again")
                header = json.loads(fh.read(n))
        except FileNotFoundError as exc:
            raise InputError(path, "file not found") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(path, "not a safetensors file (bad header)") from exc
        header.pop("__metadata__", None)
        self._base = 8 + n
        self._entries: dict[str, dict[str, Any]] = header
        end = max((int(e["data_offsets"][1]) for e in header.values()), default=0)
        if self._base + end > size:
            raise InputError(
                path,
                f"truncated: tensor data needs {self._base + end} bytes, the file has {size}",
                "the copy was cut short; save or copy the adapter again",
            )
        self._map = np.memmap(path, dtype=np.uint8, mode="r") if size else None

    def names(self) -> Iterator[str]:
        """Tensor names, in file order."""
        return iter(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of ``name`` without reading it."""
        return tuple(int(d) for d in self._entries[name]["shape"])

    def nbytes(self, name: str) -> int:
        """Stored size of ``name`` in bytes."""
        start, end = self._entries[name]["data_offsets"]
        return int(end) - int(start)

    def float32(self, name: str) -> npt.NDArray[np.float32]:
        """Tensor ``name`` as a new float32 array."""
        entry = self._entries[name]
        dtype = entry["dtype"]
        if dtype not in _DTYPES:
            raise InputError(self.path, f"tensor {name} has unsupported dtype {dtype}")
        start, end = (int(x) for x in entry["data_offsets"])
        if self._map is None:
            raise InputError(self.path, "empty file")
        raw = self._map[self._base + start : self._base + end].view(_DTYPES[dtype])
        raw = raw.reshape(self.shape(name))
        if dtype == "BF16":
            return bf16_to_f32(raw)
        out: npt.NDArray[np.float32] = raw.astype(np.float32)
        return out
