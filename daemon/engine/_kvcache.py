"""Per-conversation KV states: kept in RAM (LRU), spilled to files (LRU), found after restarts.

A state is the KV cache of one sequence (``llama_state_seq_get_data``) plus the tokens it
holds. It is only ever restored into the same model file, adapter, context size and KV type:
that identity is hashed into every file's header and directory, and anything else is
discarded, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from .._kvfiles import (
    BadStateFile,
    conversation_of,
    read_header,
    read_state,
    remove_partials,
    state_file,
    state_key,
    state_size,
    write_state,
)

__all__ = ["KVCache", "SavedState", "common_prefix", "file_identity", "identity_of"]

log = structlog.get_logger("personad.kvcache")


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
    data: npt.NDArray[np.uint8]

    @property
    def nbytes(self) -> int:
        """Memory it takes."""
        return int(self.data.nbytes) + int(self.tokens.nbytes)


class KVCache:
    """RAM LRU under ``ram_bytes`` that spills into a directory LRU under ``disk_bytes``.

    The model's worker thread uses it, and the event loop drops conversations from it
    (forget, retention), so every public method holds one lock.
    """

    def __init__(
        self, directory: Path | None, identity: str, *, ram_bytes: int, disk_bytes: int
    ) -> None:
        self.identity = identity
        self.ram_bytes = ram_bytes
        self.disk_bytes = disk_bytes
        self.ram: OrderedDict[str, SavedState] = OrderedDict()
        # key -> (file, size, tokens); tokens kept so prefix matching needs no disk read.
        self.disk: OrderedDict[str, tuple[Path, int, npt.NDArray[np.intc]]] = OrderedDict()
        # Files thrown away, by reason (exported as personad_kv_states_discarded_total).
        self.discarded: Counter[str] = Counter()
        self._stray = 0  # bytes of crash leftovers (.partial) that could not be removed
        self._drops: Counter[str] = Counter()  # per conversation: drops so far
        self._lock = threading.RLock()
        self.directory = directory / identity if directory is not None else None
        if self.directory is not None:
            self._scan()

    @property
    def ram_used(self) -> int:
        """Bytes held in RAM."""
        with self._lock:
            return sum(s.nbytes for s in self.ram.values())

    @property
    def disk_used(self) -> int:
        """Bytes held on disk, crash leftovers included."""
        with self._lock:
            return self._stray + sum(size for _, size, _ in self.disk.values())

    def _discard(self, exc: BadStateFile) -> None:
        """Throw away an unusable file: it costs one cold evaluation, never a request."""
        log.warning("kv_state_discarded", file=str(exc.path), reason=exc.reason, error=exc.detail)
        self.discarded[exc.reason] += 1
        try:
            exc.path.unlink(missing_ok=True)
        except OSError as err:
            log.warning("kv_state_not_removed", file=str(exc.path), error=str(err))

    def _scan(self) -> None:
        if self.directory is None or not self.directory.is_dir():
            return
        removed, self._stray = remove_partials(self.directory)
        if removed:
            log.warning("kv_partials_removed", count=removed, directory=str(self.directory))
            self.discarded["partial"] += removed
        found = []
        for path in self.directory.glob("*.kv"):
            try:
                header = read_header(path, self.identity)
                if path.name != state_file(self.directory, header.key).name:
                    raise BadStateFile(path, "malformed", "its name does not match its key")
                mtime = path.stat().st_mtime
            except BadStateFile as exc:
                self._discard(exc)
                continue
            except OSError as exc:
                self._discard(BadStateFile(path, "unreadable", str(exc)))
                continue
            found.append((mtime, header.key, path, header))
        for _, key, path, header in sorted(found, key=lambda f: f[0]):
            size = header.data_offset + header.nbytes
            self.disk[key] = (path, size, header.tokens)
        if found:
            log.info("kv_states_found", count=len(found), bytes=self.disk_used)

    def _load(self, key: str) -> SavedState | None:
        path, _size, _tokens = self.disk[key]
        try:
            header, data = read_state(path, self.identity)
        except BadStateFile as exc:
            self.disk.pop(key, None)
            self._discard(exc)
            return None
        return SavedState(key, header.tokens, np.frombuffer(data, dtype=np.uint8))

    def _drop_disk(self, key: str) -> None:
        entry = self.disk.pop(key, None)
        if entry is not None:
            try:
                entry[0].unlink(missing_ok=True)
            except OSError as exc:
                log.warning("kv_state_not_removed", file=str(entry[0]), error=str(exc))

    def _spill(self, state: SavedState) -> None:
        if self.directory is None or self.disk_bytes <= 0:
            return
        self._drop_disk(state.key)  # the new state replaces it
        size = state_size(self.identity, state.key, len(state.tokens), state.data.nbytes)
        if size > self.disk_bytes:
            return
        # Room first: the .partial being written counts against the budget too.
        while self.disk and self.disk_used + size > self.disk_bytes:
            self._drop_disk(next(iter(self.disk)))
        path = state_file(self.directory, state.key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_state(path, self.identity, state.key, state.tokens, state.data)
        except OSError as exc:  # a full disk costs speed, never a request
            log.warning("kv_spill_failed", error=str(exc))
            return
        self.disk[state.key] = (path, size, state.tokens)

    def get(self, key: str) -> SavedState | None:
        """The state of ``key``, from RAM or disk (which promotes it to RAM)."""
        with self._lock:
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
        with self._lock:
            stored = [(k, s.tokens) for k, s in self.ram.items()]
            stored += [(k, t) for k, (_, _, t) in self.disk.items()]
        for key, held in stored:
            if not key.startswith(scope):
                continue
            n = common_prefix(held, tokens)
            if n and (best is None or n > best[1]):
                best = (key, n)
        return best

    def lookup(
        self, tokens: Sequence[int], conversation: str | None, adapter: str | None
    ) -> tuple[SavedState, int] | None:
        """The state to restore for ``tokens`` and how many of them it holds: the
        conversation's own, or any other state of the same adapter sharing a longer prefix."""
        best: tuple[SavedState, int] | None = None
        if conversation is not None:
            state = self.get(state_key(conversation, adapter))
            if state is not None:
                best = (state, common_prefix(state.tokens, tokens))
        found = self.best_prefix(tokens, state_key("", adapter))
        if found is not None and (best is None or found[1] > best[1]):
            state = self.get(found[0])
            if state is not None:
                best = (state, found[1])
        return best

    def _keep(self, state: SavedState) -> None:
        self.ram[state.key] = state
        self.ram.move_to_end(state.key)
        while self.ram_used > self.ram_bytes and self.ram:
            _, old = self.ram.popitem(last=False)
            if old.key not in self.disk:
                self._spill(old)

    def put(self, state: SavedState, *, drops: int | None = None) -> None:
        """Keep ``state`` (the newest for its key); older copies on disk are dropped.

        ``drops`` is :meth:`drops` of the state's conversation when its evaluation began: if
        the conversation was dropped since (forgotten mid-generation), the state is not kept.
        """
        with self._lock:
            if drops is not None and self._drops[conversation_of(state.key)] != drops:
                return
            if state.nbytes > self.ram_bytes:
                self.ram.pop(state.key, None)
                self._spill(state)  # too big for RAM: straight to disk
                return
            self._drop_disk(state.key)
            self._keep(state)

    def discard_counts(self) -> dict[str, int]:
        """Files thrown away so far, by reason."""
        with self._lock:
            return dict(self.discarded)

    def drops(self, conversation: str) -> int:
        """How often ``conversation`` was dropped (a token for :meth:`put`)."""
        with self._lock:
            return self._drops[conversation]

    def drop_conversation(self, conversation: str) -> int:
        """Forget every state of ``conversation`` (all adapters) in RAM and on disk."""
        with self._lock:
            self._drops[conversation] += 1
            keys = {k for k in (*self.ram, *self.disk) if conversation_of(k) == conversation}
            for key in keys:
                self.ram.pop(key, None)
                self._drop_disk(key)
        if keys:
            log.info("kv_conversation_dropped", states=len(keys))
        return len(keys)

    def flush(self) -> None:
        """Write every RAM state to disk (at shutdown), so a restart finds them."""
        with self._lock:
            for state in list(self.ram.values()):
                if state.key not in self.disk:
                    self._spill(state)
