"""One runner process: spawn, the socket to it, its output into the log, kill, exit reason."""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import IO

import structlog

from .._children import child_env, exit_reason
from .protocol import Channel, Load, LoadFailed, Message, Ready

__all__ = ["Gone", "LoadError", "RunnerProcess"]

log = structlog.get_logger("personad.runner")

# Lines of the runner's stderr kept to explain a crash.
_TAIL = 20


@dataclass(frozen=True)
class Gone:
    """Put in every waiting request's queue when the process is gone."""

    reason: str
    kind: str


class LoadError(Exception):
    """The runner could not load its model (or died while loading)."""

    def __init__(self, reason: str, kind: str) -> None:
        self.reason = reason
        self.kind = kind
        super().__init__(reason)


class RunnerProcess:
    """A started runner with its model loaded; requests are multiplexed by id."""

    def __init__(
        self, model: str, proc: subprocess.Popen[bytes], channel: Channel, ready: Ready
    ) -> None:
        self.model = model
        self.proc = proc
        self.channel = channel
        self.ready = ready
        self.pid = proc.pid
        self.exited = threading.Event()
        self.gone: Gone | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, queue.SimpleQueue[Message | Gone]] = {}
        self._kill_reason: tuple[str, str] | None = None
        self.tail: deque[str] = deque(maxlen=_TAIL)

    @classmethod
    def spawn(cls, model: str, load: Load, timeout: float) -> RunnerProcess:
        """Start a runner and load the model in it; :class:`LoadError` if that fails."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = child_env()
        env["PYTHONUNBUFFERED"] = "1"
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "daemon.engine.worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                # A Ctrl-C at the terminal is the daemon's to handle: it stops runners itself.
                start_new_session=True,
            )
        finally:
            theirs.close()
        tail: deque[str] = deque(maxlen=_TAIL)
        readers = [
            threading.Thread(
                target=_forward, args=(model, proc.pid, name, stream, tail), daemon=True
            )
            for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))
        ]
        for reader in readers:
            reader.start()
        channel = Channel(mine)
        log.info("runner_starting", model=model, pid=proc.pid)
        try:
            mine.settimeout(timeout)
            channel.send(load)
            first = channel.recv()
            mine.settimeout(None)
        except (OSError, ValueError) as exc:
            first = None
            if isinstance(exc, TimeoutError):
                proc.kill()
        if not isinstance(first, Ready):
            channel.close()
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            for reader in readers:
                reader.join(timeout=2)
            if isinstance(first, LoadFailed):
                raise LoadError(first.message, "load_failed")
            said = f": {tail[-1]}" if tail else ""
            reason, kind = exit_reason(code)
            raise LoadError(f"the runner {reason} while loading the model{said}", kind)
        runner = cls(model, proc, channel, first)
        runner.tail = tail
        threading.Thread(target=runner._read, name=f"runner-{model}", daemon=True).start()
        log.info("runner_ready", model=model, pid=proc.pid)
        return runner

    def open(self) -> tuple[int, queue.SimpleQueue[Message | Gone]]:
        """A new request id and the queue its answers arrive in."""
        answers: queue.SimpleQueue[Message | Gone] = queue.SimpleQueue()
        with self._lock:
            rid = next(self._ids)
            if self.gone is not None:
                answers.put(self.gone)
            else:
                self._pending[rid] = answers
        return rid, answers

    def forget(self, rid: int) -> None:
        """Stop routing answers to request ``rid``."""
        with self._lock:
            self._pending.pop(rid, None)

    def send(self, message: Message) -> bool:
        """Send ``message``; False when the process is gone."""
        try:
            self.channel.send(message)
        except OSError:
            return False
        return True

    def _read(self) -> None:
        try:
            while (msg := self.channel.recv()) is not None:
                rid = getattr(msg, "id", None)
                with self._lock:
                    answers = self._pending.get(rid) if isinstance(rid, int) else None
                if answers is not None:
                    answers.put(msg)
        except (OSError, ValueError) as exc:
            log.warning("runner_stream_broken", model=self.model, error=str(exc))
        self._ended()

    def _ended(self) -> None:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # it closed the socket but lives: end it
            self.proc.kill()
            code = self.proc.wait()
        self.channel.close()
        if self._kill_reason is not None:
            reason, kind = self._kill_reason
        else:
            reason, kind = exit_reason(code)
            if code != 0 and self.tail:
                reason += f": {self.tail[-1]}"
        with self._lock:
            self.gone = Gone(reason, kind)
            pending, self._pending = self._pending, {}
        for answers in pending.values():
            answers.put(self.gone)
        self.exited.set()

    def kill(self, reason: str, kind: str, deadline: float) -> bool:
        """SIGKILL the runner (stopped or stuck alike) for ``reason``; whether it is gone
        within ``deadline`` seconds."""
        self._kill_reason = (reason, kind)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        return self.exited.wait(deadline)

    def stop(self, message: Message, timeout: float) -> None:
        """Ask the runner to exit with ``message`` (Close); kill it past ``timeout``."""
        self._kill_reason = ("stopped", "stopped")
        self.send(message)
        if not self.exited.wait(timeout):
            self.proc.kill()
            self.exited.wait(timeout)


def _forward(model: str, pid: int, name: str, stream: IO[bytes] | None, tail: deque[str]) -> None:
    """Write each line the runner prints (llama.cpp's messages) to the structured log."""
    if stream is None:
        return
    with stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            tail.append(line)
            log.info("runner_output", model=model, pid=pid, stream=name, line=line)
