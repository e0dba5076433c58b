"""The one way to start the HTTP stack: bind check, data directory, Daemon, app, uvicorn, preload.

``serve``, ``run``, ``chat --embedded`` and the tests all enter :func:`serve`; what differs
between them (who handles signals, what runs while it serves) stays with the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import stat
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI
from starlette.routing import Mount

from ._api import add_mount, create_app
from ._daemon import Daemon
from ._dashboard import Dashboard, PersonaBoard
from .errors import DaemonError, UnsafeBindError
from .settings import Settings

__all__ = [
    "PortUnavailable",
    "PreloadFailed",
    "Served",
    "StartupError",
    "StopSignals",
    "bind_socket",
    "check_bind",
    "restrict_umask",
    "secure_data_dir",
    "serve",
]

log = structlog.get_logger("personad.server")

# Owner-only: conversations, logs and KV states are nobody else's business.
DIR_MODE = 0o700


class StartupError(DaemonError, RuntimeError):
    """The daemon could not start; the message names what failed and the fix."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}")


class PortUnavailable(StartupError):
    """The configured address cannot be bound."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"cannot listen on {host}:{port} ({reason})",
            "stop what uses it (maybe personad is already running) or set server.port",
        )


class PreloadFailed(StartupError):
    """A model asked for at start-up is unknown or could not be loaded."""

    def __init__(self, failures: dict[str, str], models_dir: Path) -> None:
        self.failures = dict(failures)
        problem = "; ".join(
            f"model {name!r} could not be loaded at start-up: {reason}"
            for name, reason in failures.items()
        )
        super().__init__(
            problem,
            f"fix or add its manifest in {models_dir}, or ask for a model that "
            "`personad models list` shows (serve --preload, a persona's model =)",
        )


def check_bind(settings: Settings) -> None:
    """Refuse a non-loopback address without an API key."""
    if not settings.server.loopback and settings.server.api_key is None:
        raise UnsafeBindError(settings.server.host)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket bound as uvicorn binds (``SO_REUSEADDR``, so TIME-WAIT
    connections left by a previous run do not count as taken)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise PortUnavailable(host, port, exc.strerror or str(exc)) from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise PortUnavailable(host, port, exc.strerror or str(exc)) from exc
    return sock


def _tighten(path: Path) -> None:
    current = stat.S_IMODE(path.lstat().st_mode)
    if current & 0o077:
        path.chmod(current & ~0o077)
        log.info("permissions_tightened", path=str(path), mode=oct(current & ~0o077))


def restrict_umask() -> None:
    """Make every file and directory this process creates owner-only (for the commands that
    start the daemon: the library never changes process-wide state by itself)."""
    os.umask(0o077)


# What personad keeps in data_dir: its database (and backups), log, KV states, invites, and
# the folders bridges keep their logins in (data_dir/<bridge>). Nothing else is touched, in
# case data_dir is shared with other files.
_OURS = (
    "personad.db*",
    "personad.log*",
    "kv",
    "web-invites.db*",
    "console",
    "discord",
    "web",
    "matrix",
)


def secure_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` (0700) and take group and other access away from personad's own
    files in it (its database, log, KV states, bridges' folders), not from anything else.

    Files the process creates later are owner-only through the umask the commands set.
    """
    data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(data_dir)
    for entry in data_dir.iterdir():
        if entry.is_symlink() or not any(entry.match(p) for p in _OURS):
            continue
        _tighten(entry)
        if entry.is_dir():
            for root, dirs, files in os.walk(entry):
                for name in (*dirs, *files):
                    path = Path(root, name)
                    if not path.is_symlink():
                        _tighten(path)


@dataclass
class Served:
    """A daemon serving HTTP: its URL and the daemon object."""

    url: str
    daemon: Daemon
    drain_timeout: float
    app: FastAPI | None = None

    def mount(self, mount: Mount) -> str:
        """Serve another app (a bridge's page) from now on; its URL."""
        if self.app is not None:
            add_mount(self.app, mount)
        return self.url + mount.path + "/"

    def show(self, board: PersonaBoard) -> None:
        """Let ``/dashboard`` show these personas."""
        if self.app is not None:
            dashboard: Dashboard = self.app.state.dashboard
            dashboard.board = board

    async def drain(self) -> None:
        """Refuse new requests (503) and let running generations finish, within the limit."""
        self.daemon.service.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        while self.daemon.manager.busy:
            if loop.time() >= deadline:
                log.warning("drain_timeout", seconds=self.drain_timeout)
                return
            await asyncio.sleep(0.05)


class _Server(uvicorn.Server):
    # Signals belong to the command: a stop drains first, then ends the server.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ipaddress.ip_address(host).is_unspecified:
        host = "127.0.0.1" if sock.family == socket.AF_INET else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    while not server.started:
        if task.done():
            task.result()
            raise StartupError("the HTTP server stopped during start-up", "see the log above")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serve(
    settings: Settings,
    *,
    wait_preload: bool = True,
    mounts: Sequence[Mount] = (),
    **daemon_kwargs: Any,
) -> AsyncIterator[Served]:
    """Serve the API on ``server.host``/``server.port`` (port 0: any free port) until the block
    ends, then drain and stop.

    With ``wait_preload`` (the commands), it yields once ``models.preload`` is loaded and raises
    :class:`PreloadFailed` naming each model that is not; without it (tests watching /health
    during the load), it yields as soon as HTTP answers. ``mounts`` are other apps served
    under their paths (bridges' pages; :meth:`Served.mount` adds more later).
    """
    check_bind(settings)
    secure_data_dir(settings.data_dir)
    daemon = Daemon(settings, **daemon_kwargs)
    sock = bind_socket(settings.server.host, settings.server.port)
    app = create_app(daemon, mounts=mounts)
    server = _Server(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            # A WebSocket message is a request body too.
            ws_max_size=settings.server.max_body_bytes,
            timeout_graceful_shutdown=int(settings.server.drain_timeout) + 1,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    try:
        await _started(server, task)
        if wait_preload:
            await daemon.wait_preloaded()
            if daemon.preload_failures:
                raise PreloadFailed(daemon.preload_failures, settings.models.dir)
        served = Served(_url(sock), daemon, settings.server.drain_timeout, app)
        log.info("serving", url=served.url, models=daemon.manager.loaded)
        yield served
        await served.drain()
    finally:
        server.should_exit = True
        await asyncio.wait([task])
        sock.close()
        if not task.cancelled() and task.exception() is not None:
            log.error("http_server_failed", error=str(task.exception()))


class StopSignals:
    """SIGINT/SIGTERM for a command that serves.

    The first signal calls ``on_stop`` and sets :attr:`stopping`; while the caller is inside
    :meth:`starting`, it also cancels the start-up, so a stop never waits for a model load.
    A second signal exits at once.
    """

    # Seconds a stopped start-up may take to clean up before the process exits anyway.
    startup_grace = 6.0

    def __init__(self, on_stop: Callable[[], None] | None = None) -> None:
        self.stopping = asyncio.Event()
        self._on_stop = on_stop
        self._signals = 0
        self._startup: asyncio.Task[Any] | None = None
        self._cancelled = False

    def _handle(self) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second_signal_exiting_now")
            os._exit(1)
        log.info("stop_requested")
        if self._on_stop is not None:
            self._on_stop()
        self.stopping.set()
        if self._startup is not None:
            self._cancelled = True
            self._startup.cancel()
            # A model load inside llama.cpp cannot be interrupted, and its thread would hold
            # the exit until it ends: past the grace period, leave without it.
            timer = threading.Timer(self.startup_grace, self._force_exit)
            timer.daemon = True
            timer.start()

    @staticmethod
    def _force_exit() -> None:
        log.warning("stop_forced", reason="start-up did not end in time")
        os._exit(0)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handle the signals while the block runs."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._handle)
        try:
            yield self
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """A block that a stop signal cancels; that cancellation ends the block quietly (the
        caller then finds :attr:`stopping` set)."""
        task = asyncio.current_task()
        self._startup = task
        if self.stopping.is_set() and task is not None:
            self._cancelled = True
            task.cancel()  # stopped before start-up began: its first await ends it
        try:
            yield
        except asyncio.CancelledError:
            if not self._cancelled or task is None:
                raise
            task.uncancel()
        finally:
            self._startup = None
            self._cancelled = False
