"""KV state files on disk: their format, checked reading, and what needs no llama.cpp.

The engine keeps each conversation's KV state in ``kv_dir/<identity>/<hash of key>.kv``:
``PDKV1\\n``, a little-endian u32 header length, a JSON header (``identity``, ``key``,
``tokens``, ``bytes``), the tokens as C ints, then llama.cpp's sequence state. The key is
``f"{adapter or ''}\\x1f{conversation}"``.

This module must not import ``llama_cpp``: ``personad forget`` drops a conversation's files
while the daemon (and llama.cpp) may not be running at all.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import structlog

from models import atomic_path

__all__ = [
    "PARTIAL_GLOB",
    "BadStateFile",
    "DiscardReason",
    "StateHeader",
    "conversation_of",
    "drop_conversation_files",
    "read_header",
    "read_state",
    "remove_partials",
    "state_file",
    "state_key",
    "state_size",
    "write_state",
]

log = structlog.get_logger("personad.kvfiles")

_MAGIC = b"PDKV1\n"
_LENGTH = struct.Struct("<I")
_MAX_HEADER = 1 << 20  # a real header is ~200 bytes; anything huge is garbage, not a reason to OOM
_TOKEN = np.dtype(np.intc)
# models.atomic_path writes ``.<name>.<random>.partial`` beside the target and renames it.
PARTIAL_GLOB = ".*.partial"

DiscardReason = Literal["malformed", "truncated", "other_model", "unreadable", "partial"]


class BadStateFile(ValueError):
    """A state file that cannot be used; ``reason`` is the metric label for discarding it.

    Internal to the daemon (always caught and turned into a discard), so it lives here rather
    than in ``daemon.errors``, whose errors reach users.
    """

    def __init__(self, path: Path, reason: DiscardReason, detail: str) -> None:
        self.path = path
        self.reason: DiscardReason = reason
        self.detail = detail
        super().__init__(f"KV state {path.name}: {detail}")


@dataclass(frozen=True)
class StateHeader:
    """What a state file says about itself, checked against its size."""

    identity: str
    key: str
    tokens: npt.NDArray[np.intc]
    data_offset: int
    nbytes: int


def state_file(directory: Path, key: str) -> Path:
    """Where the state of ``key`` lives in an identity's directory."""
    return directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".kv")


def state_key(conversation: str, adapter: str | None) -> str:
    """The stored key of a conversation's state under ``adapter`` (a state is only valid
    under the adapter it was computed with); ``conversation=""`` gives the adapter's prefix."""
    return f"{adapter or ''}\x1f{conversation}"


def conversation_of(key: str) -> str:
    """The conversation part of a stored key (``adapter\\x1fconversation``)."""
    return key.partition("\x1f")[2]


def _field(header: dict[str, Any], name: str, kind: type) -> Any:
    value = header.get(name)
    # bool is an int to Python, never a valid count here.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"header field {name!r} is missing or not a {kind.__name__}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"header field {name!r} is negative")
    return value


def read_header(path: Path, identity: str | None = None) -> StateHeader:
    """Read and check the header and tokens of ``path``; :class:`BadStateFile` if unusable.

    With ``identity``, a state made for another model, adapter or context is refused too.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(len(_MAGIC) + _LENGTH.size)
            if head[: len(_MAGIC)] != _MAGIC[: len(head)]:
                raise BadStateFile(path, "malformed", "not a personad KV state")
            if len(head) < len(_MAGIC) + _LENGTH.size:
                raise BadStateFile(path, "truncated", "the file ends inside its header")
            (n,) = _LENGTH.unpack(head[len(_MAGIC) :])
            if n > _MAX_HEADER:
                raise BadStateFile(path, "malformed", f"a header of {n} bytes")
            raw = fh.read(n)
            if len(raw) < n:
                raise BadStateFile(path, "truncated", "the file ends inside its header")
            try:
                header = json.loads(raw)
                if not isinstance(header, dict):
                    raise ValueError("the header is not a JSON object")
                found = _field(header, "identity", str)
                key = _field(header, "key", str)
                count = _field(header, "tokens", int)
                nbytes = _field(header, "bytes", int)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise BadStateFile(path, "malformed", str(exc)) from exc
            if identity is not None and found != identity:
                raise BadStateFile(path, "other_model", "made for another model or context")
            offset = len(_MAGIC) + _LENGTH.size + n + count * _TOKEN.itemsize
            if size < offset + nbytes:
                raise BadStateFile(path, "truncated", f"{size} bytes, {offset + nbytes} expected")
            if size > offset + nbytes:
                raise BadStateFile(path, "malformed", f"{size} bytes, {offset + nbytes} expected")
            tokens = np.frombuffer(fh.read(count * _TOKEN.itemsize), dtype=_TOKEN).copy()
    except OSError as exc:
        raise BadStateFile(path, "unreadable", str(exc)) from exc
    if len(tokens) != count:  # shrank while we read it
        raise BadStateFile(path, "truncated", "the file ends inside its tokens")
    return StateHeader(found, key, tokens, offset, nbytes)


def read_state(path: Path, identity: str) -> tuple[StateHeader, bytes]:
    """The header and the llama.cpp state bytes of ``path``, checked again on every read."""
    header = read_header(path, identity)
    try:
        with path.open("rb") as fh:
            fh.seek(header.data_offset)
            data = fh.read()
    except OSError as exc:
        raise BadStateFile(path, "unreadable", str(exc)) from exc
    if len(data) != header.nbytes:
        raise BadStateFile(path, "truncated", "the file changed while it was read")
    return header, data


def _header(identity: str, key: str, n_tokens: int, nbytes: int) -> bytes:
    return json.dumps(
        {"identity": identity, "key": key, "tokens": n_tokens, "bytes": nbytes}
    ).encode()


def state_size(identity: str, key: str, n_tokens: int, nbytes: int) -> int:
    """The size of the file :func:`write_state` writes (to make room before writing it)."""
    head = _header(identity, key, n_tokens, nbytes)
    return len(_MAGIC) + _LENGTH.size + len(head) + n_tokens * _TOKEN.itemsize + nbytes


def write_state(
    path: Path, identity: str, key: str, tokens: npt.NDArray[np.intc], data: npt.NDArray[np.uint8]
) -> None:
    """Write a state atomically: a crash leaves a ``.partial``, never half a ``.kv`` file."""
    head = _header(identity, key, len(tokens), data.nbytes)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        fh.write(_MAGIC + _LENGTH.pack(len(head)) + head)
        fh.write(tokens.astype(_TOKEN).tobytes())
        fh.write(data.data)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def remove_partials(directory: Path) -> tuple[int, int]:
    """Remove the ``.partial`` files a crash left; (how many removed, bytes that remain)."""
    removed = remaining = 0
    for path in directory.glob(PARTIAL_GLOB):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("kv_partial_not_removed", file=str(path), error=str(exc))
            remaining += _size(path)
            continue
        removed += 1
    return removed, remaining


def drop_conversation_files(kv_dir: Path, conversation: str) -> int:
    """Delete every stored KV state of ``conversation`` under ``kv_dir`` (any model, adapter).

    Works without llama.cpp and without the daemon. A daemon that is running keeps its own
    index and RAM copies: while it runs, drop through it (``ModelManager.drop_conversation``),
    which also calls this for the models it has not loaded. Returns how many files went.
    """
    if not kv_dir.is_dir():
        return 0
    dropped = 0
    for directory in sorted(p for p in kv_dir.iterdir() if p.is_dir()):
        for path in sorted(directory.glob("*.kv")):
            try:
                key = read_header(path).key
            except BadStateFile:
                continue  # the daemon discards it at its next scan
            if conversation_of(key) != conversation:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            dropped += 1
            log.info("kv_state_dropped", file=str(path))
    return dropped
