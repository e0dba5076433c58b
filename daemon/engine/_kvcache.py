"""Per-conversation KV states: kept in RAM (LRU), spilled to files (LRU), found after restarts.

A state is the KV cache of one sequence (``llama_state_seq_get_data``) plus the tokens it
holds. It is only ever restored into the same model file, adapter, context size and KV type:
that identity is hashed into every file's header and directory, and anything else is
discarded, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from models import atomic_path

__all__ = ["KVCache", "SavedState", "common_prefix", "identity_of"]

log = structlog.get_logger("personad.kvcache")

_MAGIC = b"PDKV1\n"


def common_prefix(a: Sequence[int] | npt.NDArray[np.intc], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    left = np.asarray(a[:n], dtype=np.int64)
    right = np.asarray(b[:n], dtype=np.int64)
    diff = np.flatnonzero(left != right)
    return int(diff[0]) if diff.size else n


def identity_of(*parts: object) -> str:
    """A short hash of everything that must match for a state to be valid."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def file_identity(path: Path | None) -> str:
    """A file named by path, size and modification time (cheap, and changes on rewrite)."""
    if path is None:
        return "none"
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


@dataclass
class SavedState:
    """One sequence's KV state and the tokens it covers."""

    key: str
    tokens: npt.NDArray[np.intc]
    data: bytes

    @property
    def nbytes(self) -> int:
        """Memory it takes."""
        return len(self.data) + int(self.tokens.nbytes)


class KVCache:
    """RAM LRU under ``ram_bytes`` that spills into a directory LRU under ``disk_bytes``."""

    def __init__(
        self, directory: Path | None, identity: str, *, ram_bytes: int, disk_bytes: int
    ) -> None:
        self.identity = identity
        self.ram_bytes = ram_bytes
        self.disk_bytes = disk_bytes
        self.ram: OrderedDict[str, SavedState] = OrderedDict()
        # key -> (file, size, tokens); tokens kept so prefix matching needs no disk read.
        self.disk: OrderedDict[str, tuple[Path, int, npt.NDArray[np.intc]]] = OrderedDict()
        self.directory = directory / identity if directory is not None else None
        if self.directory is not None:
            self._scan()

    @property
    def ram_used(self) -> int:
        """Bytes held in RAM."""
        return sum(s.nbytes for s in self.ram.values())

    @property
    def disk_used(self) -> int:
        """Bytes held on disk."""
        return sum(size for _, size, _ in self.disk.values())

    def _file(self, directory: Path, key: str) -> Path:
        return directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".kv")

    def _scan(self) -> None:
        if self.directory is None or not self.directory.is_dir():
            return
        found = []
        for path in self.directory.glob("*.kv"):
            try:
                key, tokens = self._read_header(path)
            except (OSError, ValueError) as exc:
                log.warning("kv_state_unreadable", file=str(path), error=str(exc))
                continue
            found.append((path.stat().st_mtime, key, path, tokens))
        for _, key, path, tokens in sorted(found, key=lambda f: f[0]):
            self.disk[key] = (path, path.stat().st_size, tokens)
        if found:
            log.info("kv_states_found", count=len(found), bytes=self.disk_used)

    def _read_header(self, path: Path) -> tuple[str, npt.NDArray[np.intc]]:
        with path.open("rb") as fh:
            if fh.read(len(_MAGIC)) != _MAGIC:
                raise ValueError("not a personad KV state")
            (n,) = struct.unpack("<I", fh.read(4))
            header = json.loads(fh.read(n))
            if header.get("identity") != self.identity:
                raise ValueError("made for another model, adapter or context")
            tokens = np.frombuffer(fh.read(4 * header["tokens"]), dtype=np.intc).copy()
        if len(tokens) != header["tokens"]:
            raise ValueError("truncated")
        return str(header["key"]), tokens

    def _load(self, key: str) -> SavedState | None:
        path, _size, tokens = self.disk[key]
        try:
            with path.open("rb") as fh:
                fh.seek(len(_MAGIC))
                (n,) = struct.unpack("<I", fh.read(4))
                header = json.loads(fh.read(n))
                fh.seek(4 * len(tokens), os.SEEK_CUR)
                data = fh.read()
            if header.get("identity") != self.identity or len(data) != header["bytes"]:
                raise ValueError("identity or size mismatch")
        except (OSError, ValueError) as exc:
            log.warning("kv_state_unreadable", file=str(path), error=str(exc))
            self._drop_disk(key)
            return None
        return SavedState(key, tokens, data)

    def _drop_disk(self, key: str) -> None:
        entry = self.disk.pop(key, None)
        if entry is not None:
            entry[0].unlink(missing_ok=True)

    def _spill(self, state: SavedState) -> None:
        if self.directory is None or self.disk_bytes <= 0:
            return
        path = self._file(self.directory, state.key)
        header = json.dumps(
            {
                "identity": self.identity,
                "key": state.key,
                "tokens": len(state.tokens),
                "bytes": len(state.data),
            }
        ).encode()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, tmp.open("wb") as fh:
                fh.write(_MAGIC + struct.pack("<I", len(header)) + header)
                fh.write(state.tokens.astype(np.intc).tobytes())
                fh.write(state.data)
        except OSError as exc:  # a full disk costs speed, never a request
            log.warning("kv_spill_failed", error=str(exc))
            return
        self.disk[state.key] = (path, path.stat().st_size, state.tokens)
        self.disk.move_to_end(state.key)
        while self.disk_used > self.disk_bytes and self.disk:
            self._drop_disk(next(iter(self.disk)))

    def get(self, key: str) -> SavedState | None:
        """The state of ``key``, from RAM or disk (which promotes it to RAM)."""
        state = self.ram.get(key)
        if state is not None:
            self.ram.move_to_end(key)
            return state
        if key in self.disk:
            state = self._load(key)
            if state is not None:
                self._keep(state)
            return state
        return None

    def best_prefix(self, tokens: Sequence[int], scope: str = "") -> tuple[str, int] | None:
        """The stored key (starting with ``scope``) sharing the longest prefix with ``tokens``."""
        best: tuple[str, int] | None = None
        for key, state in self.ram.items():
            if not key.startswith(scope):
                continue
            n = common_prefix(state.tokens, tokens)
            if n and (best is None or n > best[1]):
                best = (key, n)
        for key, (_, _, stored) in self.disk.items():
            if not key.startswith(scope):
                continue
            n = common_prefix(stored, tokens)
            if n and (best is None or n > best[1]):
                best = (key, n)
        return best

    def _keep(self, state: SavedState) -> None:
        self.ram[state.key] = state
        self.ram.move_to_end(state.key)
        while self.ram_used > self.ram_bytes and self.ram:
            _, old = self.ram.popitem(last=False)
            if old.key not in self.disk:
                self._spill(old)

    def put(self, state: SavedState) -> None:
        """Keep ``state`` (the newest for its key); older copies on disk are dropped."""
        if state.nbytes > self.ram_bytes:
            self._spill(state)  # too big for RAM: straight to disk
            return
        self._drop_disk(state.key)
        self._keep(state)

    def flush(self) -> None:
        """Write every RAM state to disk (at shutdown), so a restart finds them."""
        for state in list(self.ram.values()):
            if state.key not in self.disk:
                self._spill(state)
