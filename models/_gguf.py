"""GGUF metadata, read with the ``gguf`` package without loading llama.cpp."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GGUFError

__all__ = ["GGUFInfo", "read_gguf_info"]

_MAGIC = b"GGUF"
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


def read_gguf_info(path: Path) -> GGUFInfo:
    """Read a GGUF file's metadata and tensor table; raise :class:`GGUFError` when it is bad."""
    import gguf

    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError as exc:
        raise GGUFError(path, "file not found", "check the manifest's path") from exc
    except OSError as exc:
        raise GGUFError(path, f"cannot be read ({exc.strerror})", "check permissions") from exc
    if magic != _MAGIC:
        raise GGUFError(
            path, "not a GGUF file (bad magic)", "point the manifest at a .gguf model file"
        )
    try:
        reader = gguf.GGUFReader(path, "r")
    except (ValueError, IndexError, OSError, KeyError) as exc:
        # The reader maps tensors as it parses: a short file fails here with a shape error.
        raise GGUFError(
            path,
            f"truncated or damaged ({exc})",
            "the download or copy was cut short or corrupted; fetch the file again",
        ) from exc
    tensor_end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if tensor_end > size:
        raise GGUFError(
            path,
            f"truncated: tensor data needs {tensor_end} bytes but the file has {size}",
            "the download or copy was cut short; fetch the file again",
        )
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
