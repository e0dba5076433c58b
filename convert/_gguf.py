"""Reading a base GGUF tensor by tensor and writing a new one with the same metadata."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models import GGUFError, open_gguf

from ._arch import ArchInfo
from ._safetensors import bf16_to_f32, f32_to_bf16
from .errors import InputError, SplitGGUF

__all__ = ["FLOAT_TYPES", "BaseGGUF", "StreamWriter", "copy_metadata"]

FLOAT_TYPES = ("F32", "F16", "BF16")


def _value(field: Any) -> Any:
    """A metadata value exactly as stored (strings as raw bytes, arrays as lists)."""
    import gguf

    main = field.types[0]
    if main == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]) for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if main == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]])
    return field.parts[field.data[0]].tolist()[0]


def copy_metadata(reader: Any, writer: Any, skip: Iterable[str] = ()) -> None:
    """Copy every key with its original value type; alignment through the writer's own call."""
    import gguf

    skipped = set(skip) | {"general.architecture"}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in skipped:
            continue
        if name == "general.alignment":
            writer.add_custom_alignment(int(_value(field)))
            continue
        value = _value(field)
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, main, sub_type=sub)


class BaseGGUF:
    """A memory-mapped GGUF with checks for what merging needs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.reader = open_gguf(path)
        except GGUFError as exc:
            # models owns what makes a GGUF readable; convert reports it as one of its inputs.
            raise InputError(exc.path, exc.problem, exc.fix) from exc
        split = self.field("split.count")
        if isinstance(split, int) and split > 1:
            raise SplitGGUF(path, split)
        self.arch = str(self.field("general.architecture") or "unknown")
        self.tensors = {t.name: t for t in self.reader.tensors}
        self._fd: int | None = None

    def field(self, name: str) -> Any:
        """A metadata value (strings decoded), or None."""
        f = self.reader.fields.get(name)
        if f is None:
            return None
        value = _value(f)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    def arch_info(self) -> ArchInfo:
        """Block and head counts plus the architecture's transforms."""
        a = self.arch
        n_head = int(self.field(f"{a}.attention.head_count") or 0)
        n_kv = self.field(f"{a}.attention.head_count_kv")
        return ArchInfo(
            arch=a,
            n_blocks=int(self.field(f"{a}.block_count") or 0),
            n_head=n_head,
            n_head_kv=int(n_kv) if n_kv is not None else n_head,
        )

    def type_name(self, name: str) -> str:
        """The tensor's GGML type name (F16, Q4_K...)."""
        return str(self.tensors[name].tensor_type.name)

    def shape(self, name: str) -> tuple[int, ...]:
        """numpy shape (rows first), whatever the storage type."""
        return tuple(int(x) for x in reversed(self.tensors[name].shape))

    def rows(self, name: str) -> int:
        """Number of rows (1 for a vector)."""
        shape = self.shape(name)
        return shape[0] if len(shape) > 1 else 1

    def read_bytes(self, name: str, lo: int, hi: int) -> bytes:
        """Raw bytes of rows ``lo:hi``, read with pread rather than through the memory map.

        Touching a memory map counts the file's pages in our resident size; reading into a
        short-lived buffer keeps a multi-gigabyte merge within a few chunks of memory.
        """
        t = self.tensors[name]
        row_bytes = int(t.n_bytes) // self.rows(name)
        offset = int(t.data_offset) + lo * row_bytes
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        data = os.pread(self._fd, (hi - lo) * row_bytes, offset)
        if len(data) != (hi - lo) * row_bytes:
            raise InputError(self.path, f"truncated inside tensor {name}", "fetch it again")
        return data

    def float32_rows(self, name: str, lo: int, hi: int) -> npt.NDArray[np.float32]:
        """Rows ``lo:hi`` of an unquantized tensor as float32."""
        kind = self.type_name(name)
        raw = self.read_bytes(name, lo, hi)
        cols = self.shape(name)[-1]
        if kind == "BF16":
            return bf16_to_f32(np.frombuffer(raw, dtype=np.uint16)).reshape(-1, cols)
        dtype = {"F16": np.float16, "F32": np.float32}.get(kind)
        if dtype is None:
            raise ValueError(f"{name} is {kind}, not a float tensor")
        out: npt.NDArray[np.float32] = np.frombuffer(raw, dtype=dtype).astype(np.float32)
        return out.reshape(-1, cols)

    def encode(self, name: str, values: npt.NDArray[np.float32]) -> bytes:
        """``values`` in the tensor's storage type, as bytes."""
        kind = self.type_name(name)
        if kind == "BF16":
            return f32_to_bf16(values).tobytes()
        return values.astype(np.float16 if kind == "F16" else np.float32).tobytes()

    def close(self) -> None:
        """Close the file descriptor used for reads."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def add_tensor_info(self, writer: Any, name: str) -> None:
        """Declare ``name`` in ``writer`` with its original type and size."""
        t = self.tensors[name]
        data = np.asarray(t.data)
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, raw_dtype=t.tensor_type)


class StreamWriter:
    """A GGUF writer whose tensor data is written in chunks, in declaration order."""

    def __init__(self, path: Path, arch: str) -> None:
        import gguf

        self._w = gguf.GGUFWriter(path, arch)

    @property
    def writer(self) -> Any:
        """The underlying ``gguf.GGUFWriter`` (for metadata and tensor declarations)."""
        return self._w

    def begin(self) -> None:
        """Write the header, metadata and tensor table; tensor data follows."""
        self._w.write_header_to_file()
        self._w.write_kv_data_to_file()
        self._w.write_ti_data_to_file()
        if self._w.fout is None:
            raise RuntimeError("the GGUF writer has no open file")
        self._out = self._w.fout[0]

    def write_tensor(self, chunks: Iterable[bytes], nbytes: int) -> None:
        """Write one tensor's data, padded to the file's alignment like the writer does."""
        self._w.write_padding(self._out, self._out.tell())
        written = 0
        for chunk in chunks:
            self._out.write(chunk)
            written += len(chunk)
        if written != nbytes:
            raise RuntimeError(f"wrote {written} bytes for a tensor of {nbytes}")
        self._w.write_padding(self._out, nbytes)

    def close(self) -> None:
        """Flush and close the file."""
        self._w.close()
