"""The runner protocol: typed messages, as length-prefixed JSON frames over a local socket.

Both sides import this module: the daemon (``daemon._runner``) and the runner process
(``daemon.engine.worker``). It imports nothing of llama.cpp, nor of the daemon's HTTP side.

One conversation, parent -> child first::

    Load            -> Ready | LoadFailed              once, at start
    Call(id)        -> Result(id) | Fail(id)           chat_prompt, text_prompt, token_id_ok,
                                                       drop_conversation
    Generate(id)    -> PieceMsg(id)... End(id) | Fail(id)
    Cancel(id)                                         ends Generate(id) soon ("cancelled")
    Probe(id)       -> Alive(id) | Fail(id)            the liveness probe (one token)
    Close           -> (the child closes the engine and exits 0)

Every request carries an id chosen by the parent, so that many calls (generations of a batching
engine, a probe, a tokenization) are in flight at once over one socket.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

__all__ = [
    "Alive",
    "Call",
    "Cancel",
    "Channel",
    "Close",
    "End",
    "Fail",
    "Generate",
    "Load",
    "LoadFailed",
    "Message",
    "PieceMsg",
    "Probe",
    "Ready",
    "Result",
    "decode",
    "encode",
]

_HEADER = struct.Struct(">I")
# A frame larger than this is a bug (or a corrupt stream), not a message.
MAX_FRAME = 256 << 20


@dataclass
class Message:
    """Base of every message; ``KIND`` names it on the wire."""

    KIND: ClassVar[str] = ""


@dataclass
class Load(Message):
    """Build the engine: ``factory`` ("module:function") gets the manifest and settings."""

    KIND: ClassVar[str] = "load"
    factory: str
    manifest: dict[str, Any]
    models: dict[str, Any]
    data_dir: str


@dataclass
class Ready(Message):
    """The engine is loaded."""

    KIND: ClassVar[str] = "ready"
    pid: int
    n_ctx: int
    adapter_names: list[str]
    # Generations the engine decodes at once (the Engine protocol's optional ``parallel``).
    parallel: int = 1


@dataclass
class LoadFailed(Message):
    """The engine could not be built; the child exits after sending it."""

    KIND: ClassVar[str] = "load_failed"
    message: str
    error_type: str = "RuntimeError"


@dataclass
class Call(Message):
    """A synchronous engine method (``method`` is one of :data:`CALLS`)."""

    KIND: ClassVar[str] = "call"
    id: int
    method: str
    args: list[Any]


@dataclass
class Result(Message):
    """The value a :class:`Call` returned (a prompt is ``{"tokens": ..., "stop": ...}``)."""

    KIND: ClassVar[str] = "result"
    id: int
    value: Any


@dataclass
class Fail(Message):
    """A request failed; a :class:`~daemon.errors.RequestError` keeps its status and code."""

    KIND: ClassVar[str] = "fail"
    id: int
    message: str
    status: int | None = None
    error_type: str | None = None
    code: str | None = None
    param: str | None = None


@dataclass
class Generate(Message):
    """Start a generation; the child answers with pieces, then :class:`End`."""

    KIND: ClassVar[str] = "generate"
    id: int
    tokens: list[int]
    stop: list[str]
    params: dict[str, Any]
    conversation: str | None = None
    adapter: str | None = None


@dataclass
class PieceMsg(Message):
    """One :class:`~daemon._types.Piece` of generation ``id``."""

    KIND: ClassVar[str] = "piece"
    id: int
    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_hit: bool = False


@dataclass
class End(Message):
    """Generation or probe ``id`` is over; carries the KV store's figures for /metrics."""

    KIND: ClassVar[str] = "end"
    id: int
    kv_ram: int = 0
    kv_disk: int = 0
    discarded: dict[str, int] = field(default_factory=dict)


@dataclass
class Cancel(Message):
    """Stop generation ``id`` soon."""

    KIND: ClassVar[str] = "cancel"
    id: int


@dataclass
class Probe(Message):
    """Prove the engine still generates: one token, outside every queue and cache."""

    KIND: ClassVar[str] = "probe"
    id: int


@dataclass
class Alive(Message):
    """The answer to :class:`Probe`, with the KV figures (so a scrape never asks the child)."""

    KIND: ClassVar[str] = "alive"
    id: int
    kv_ram: int = 0
    kv_disk: int = 0
    discarded: dict[str, int] = field(default_factory=dict)


@dataclass
class Close(Message):
    """Close the engine and exit."""

    KIND: ClassVar[str] = "close"


_KINDS: dict[str, type[Message]] = {
    cls.KIND: cls
    for cls in (
        Load,
        Ready,
        LoadFailed,
        Call,
        Result,
        Fail,
        Generate,
        PieceMsg,
        End,
        Cancel,
        Probe,
        Alive,
        Close,
    )
}
_FIELDS: dict[type[Message], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _KINDS.values()
}


def encode(message: Message) -> bytes:
    """The JSON bytes of ``message``."""
    body = {name: getattr(message, name) for name in _FIELDS[type(message)]}
    body["t"] = message.KIND
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def decode(data: bytes) -> Message:
    """The message encoded in ``data``; :class:`ValueError` for an unknown kind."""
    body = json.loads(data)
    cls = _KINDS.get(body.pop("t", None))
    if cls is None:
        raise ValueError("a runner frame of unknown kind")
    return cls(**body)


class Channel:
    """Messages over a connected stream socket; ``send`` may be called from any thread,
    ``recv`` from one reader thread only."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._rfile = sock.makefile("rb")

    def send(self, message: Message) -> None:
        """Send one message; :class:`OSError` once the other side is gone."""
        data = encode(message)
        with self._lock:
            self.sock.sendall(_HEADER.pack(len(data)) + data)

    def recv(self) -> Message | None:
        """The next message, or ``None`` at the end of the stream."""
        header = self._rfile.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME:
            raise ValueError(f"a runner frame of {size} bytes")
        data = self._rfile.read(size)
        if len(data) < size:
            return None
        return decode(data)

    def close(self) -> None:
        """Close the socket (a blocked ``recv`` on the other side then ends)."""
        self._rfile.close()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
