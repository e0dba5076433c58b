"""GGUF files: the one check that a file is a usable GGUF, and its metadata.

The catalogue, the engine (through the catalogue) and convert all open GGUF files through
:func:`open_gguf`, so a bad file is named the same way everywhere. Read with the ``gguf``
package, without loading llama.cpp.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GGUFError

__all__ = ["GGUFHeader", "GGUFInfo", "open_gguf", "read_gguf_header", "read_gguf_info"]

_MAGIC = b"GGUF"
# magic, version (u32), tensor count (u64), metadata key count (u64)
_HEADER = struct.Struct("<4sIQQ")
_VERSIONS = (2, 3)  # version 1 (mid-2023) had 32-bit counts; the gguf reader refuses it too
# The fewest bytes one entry can take: a tensor's name length, n_dims, type and offset; a
# key's length, value type and a one-byte value. Enough to tell a sane count from garbage.
_MIN_TENSOR_INFO = 8 + 4 + 4 + 8
_MIN_KV = 8 + 4 + 1
_FETCH_AGAIN = "the download or copy was cut short; fetch the file again"
_NOT_GGUF_FIX = "pass a .gguf model file (personad convert hf makes one from safetensors)"
# Arrays longer than this (token lists, merges) are summarised, not printed.
_ARRAY_PREVIEW = 8


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file says about itself."""

    path: Path
    architecture: str
    name: str | None
    parameters: int
    quantization: str
    context_length: int | None
    size_bytes: int
    tensor_count: int
    chat_template: str | None
    metadata: dict[str, Any] = field(repr=False)


def _field_value(reader_field: Any) -> Any:
    """Decode one metadata field to a plain Python value (summarising long arrays)."""
    import gguf

    types = list(reader_field.types)
    if not types:
        return None
    main = types[0]
    if main == gguf.GGUFValueType.ARRAY:
        n = len(reader_field.data)
        sub = types[-1]
        items = [_scalar(reader_field.parts[i], sub) for i in reader_field.data[:_ARRAY_PREVIEW]]
        if n > _ARRAY_PREVIEW:
            return {"array_of": sub.name.lower(), "length": n, "first": items}
        return items
    return _scalar(reader_field.parts[reader_field.data[0]], main)


def _scalar(part: Any, value_type: Any) -> Any:
    import gguf

    if value_type == gguf.GGUFValueType.STRING:
        return bytes(np.asarray(part, dtype=np.uint8)).decode("utf-8", errors="replace")
    value = np.asarray(part).reshape(-1)[0]
    if value_type == gguf.GGUFValueType.BOOL:
        return bool(value)
    return value.item()


def _quantization_name(file_type: Any, tensor_types: list[str]) -> str:
    import gguf

    if isinstance(file_type, int):
        try:
            return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            return f"unknown ({file_type})"
    # Older files carry no general.file_type: name the most common tensor type instead.
    if tensor_types:
        return max(set(tensor_types), key=tensor_types.count)
    return "unknown"


@dataclass(frozen=True)
class GGUFHeader:
    """The fixed 24 bytes every GGUF file starts with, checked against the file's size."""

    version: int
    tensor_count: int
    kv_count: int
    size_bytes: int
    byte_order: str  # "<" or ">" (struct notation)


def _open_failed(path: Path, exc: OSError) -> GGUFError:
    if isinstance(exc, FileNotFoundError):
        return GGUFError(path, "file not found", "check the path")
    if isinstance(exc, IsADirectoryError):
        return GGUFError(path, "is a directory, not a file", "pass the .gguf file inside it")
    return GGUFError(path, f"cannot be read ({exc.strerror})", "check its permissions")


def read_gguf_header(path: Path) -> GGUFHeader:
    """Check magic, version and counts without parsing further; raise :class:`GGUFError`."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_HEADER.size)
    except OSError as exc:
        raise _open_failed(path, exc) from exc
    if head[:4] != _MAGIC:
        raise GGUFError(path, "not a GGUF file (bad magic)", _NOT_GGUF_FIX)
    if len(head) < _HEADER.size:
        raise GGUFError(path, f"truncated: the header is cut at {len(head)} bytes", _FETCH_AGAIN)
    order = "<"
    version = _HEADER.unpack(head)[1]
    if version & 0xFFFF == 0:  # written on a big-endian machine (the gguf reader copes)
        order = ">"
    _, version, tensors, kvs = struct.unpack(order + _HEADER.format.lstrip("<"), head)
    if version not in _VERSIONS:
        raise GGUFError(
            path,
            f"GGUF version {version} is not supported (personad reads versions 2 and 3)",
            "convert the model again with a current llama.cpp (personad convert hf)",
        )
    least = _HEADER.size + tensors * _MIN_TENSOR_INFO + kvs * _MIN_KV
    if least > size:
        # Checked before parsing: a damaged count would otherwise have the reader loop (or
        # allocate) for billions of entries before it notices.
        raise GGUFError(
            path,
            f"truncated or damaged: the header promises {tensors} tensors and {kvs} metadata "
            f"keys, more than {size} bytes can hold",
            _FETCH_AGAIN,
        )
    return GGUFHeader(version, tensors, kvs, size, order)


def open_gguf(path: Path) -> Any:
    """A ``gguf.GGUFReader`` on ``path``, once the header, the metadata and the tensor table
    parse and every tensor's data lies inside the file; otherwise a :class:`GGUFError` that
    names the problem and the fix. Every GGUF personad reads is opened here."""
    import gguf

    header = read_gguf_header(path)
    try:
        reader = gguf.GGUFReader(path, "r")
    except (ValueError, IndexError, OSError, KeyError, OverflowError, MemoryError) as exc:
        # The reader maps tensors as it parses: a short file fails here with a shape error.
        raise GGUFError(
            path,
            f"truncated or damaged ({exc})",
            "the download or copy was cut short or corrupted; fetch the file again",
        ) from exc
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > header.size_bytes:
        raise GGUFError(
            path,
            f"truncated: tensor data needs {end} bytes but the file has {header.size_bytes}",
            _FETCH_AGAIN,
        )
    return reader


def read_gguf_info(path: Path) -> GGUFInfo:
    """Read a GGUF file's metadata and tensor table; raise :class:`GGUFError` when it is bad."""
    reader = open_gguf(path)
    size = path.stat().st_size
    metadata = {name: _field_value(f) for name, f in reader.fields.items()}
    arch = str(metadata.get("general.architecture", "unknown"))
    ctx = metadata.get(f"{arch}.context_length")
    tensor_types = [t.tensor_type.name for t in reader.tensors]
    template = metadata.get("tokenizer.chat_template")
    return GGUFInfo(
        path=path,
        architecture=arch,
        name=metadata.get("general.name"),
        parameters=sum(int(t.n_elements) for t in reader.tensors),
        quantization=_quantization_name(metadata.get("general.file_type"), tensor_types),
        context_length=int(ctx) if isinstance(ctx, int) else None,
        size_bytes=size,
        tensor_count=len(reader.tensors),
        chat_template=template if isinstance(template, str) else None,
        metadata=metadata,
    )
