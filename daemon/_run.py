"""``personad run``: the daemon and the personas' bridges in one process, as a systemd service.

Lifecycle: load models, connect bridges, then ``READY=1``. A watchdog coroutine pings systemd
and refreshes ``STATUS=``. SIGTERM/SIGINT: ``STOPPING=1``, new requests get 503, running
generations finish (up to ``drain_timeout``), bridges and state are closed, exit 0; a second
signal exits at once. A stop signal during start-up (a model loading, a bridge connecting)
ends it without waiting; a model that cannot be loaded ends it with an error. SIGHUP reloads
model and persona manifests; bridges stay connected.

This module is where the layering bends on purpose: it is the composition root that puts the
daemon and :class:`bridges.PersonaHost` together (import-linter names it as the one exception).
Bridges themselves only see the daemon through its HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, Protocol, TextIO, runtime_checkable
from zoneinfo import ZoneInfo

import structlog
import typer
from starlette.routing import Mount

from bridges import PersonaEngine, PersonaHost
from models import Catalog, PersonaManifest, load_personas

from ._dashboard import ConversationSummary, PersonaSnapshot
from ._logging import configure_logging
from ._server import Served, StartupError, StopSignals, restrict_umask, secure_data_dir, serve
from ._systemd import Notifier
from .client import DaemonClient
from .settings import Settings, load_settings

__all__ = ["run", "run_cmd"]

log = structlog.get_logger("personad.run")


@runtime_checkable
class HttpPage(Protocol):
    """A bridge with a page on the daemon's HTTP server (the web bridge)."""

    persona: str

    def http_mount(self, settings: Settings) -> Mount:
        """The app to serve and its path."""
        ...


_SPOKEN = {"message", "reply", "photo", "video", "file"}


def _conversations(engine: PersonaEngine, limit: int = 5) -> list[ConversationSummary]:
    out = []
    for bridge, channel in engine.store.channels():
        last = engine.store.recent(bridge, channel, 1)
        if last:
            m = last[-1]
            out.append(ConversationSummary(bridge, channel, m.ts, m.author_name, m.text))
    return sorted(out, key=lambda c: c.last_at, reverse=True)[:limit]


def snapshot(engine: PersonaEngine) -> PersonaSnapshot:
    """One persona's presence, plans and activity, now (on its own clock)."""
    state = engine.state
    tz = ZoneInfo(engine.persona.behaviour.timezone)
    now = engine.clock.now().astimezone(tz)
    upcoming = engine.upcoming()
    until = None
    if not state.online and state.offline_reason == "away" and state.away is not None:
        until = state.away.end.astimezone(tz)
    elif not state.online and state.offline_reason == "asleep":
        until = next((u.at for u in upcoming if "wake" in u.what), None)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    hour_start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    recent = [m for m in engine.store.since(min(day_start, hour_start)) if m.kind in _SPOKEN]
    per_hour = Counter(
        m.ts.astimezone(tz).replace(minute=0, second=0, microsecond=0) for m in recent
    )
    hours = [hour_start + timedelta(hours=i) for i in range(24)]
    return PersonaSnapshot(
        name=engine.name,
        online=state.online,
        reason=state.offline_reason,
        paused=state.paused,
        until=until,
        upcoming=[(u.at, u.what) for u in upcoming[:6]],
        conversations=_conversations(engine),
        messages_today=sum(1 for m in recent if m.ts >= day_start),
        by_hour=[(h, per_hour.get(h, 0)) for h in hours],
    )


class EngineBoard:
    """The dashboard's :class:`~daemon._dashboard.PersonaBoard` over running engines."""

    def __init__(self, engines: Sequence[PersonaEngine]) -> None:
        self._engines = {e.name: e for e in engines}

    def snapshots(self) -> list[PersonaSnapshot]:
        """Every persona, now."""
        return [snapshot(e) for e in self._engines.values()]

    async def set_paused(self, persona: str, paused: bool) -> bool:
        """The kill switch of [2/7]; False when no such persona runs here."""
        engine = self._engines.get(persona)
        if engine is None:
            return False
        await (engine.pause() if paused else engine.resume())
        return True


@contextlib.asynccontextmanager
async def _model_server(
    settings: Settings, personas: list[PersonaManifest]
) -> AsyncIterator[tuple[str, Served | None]]:
    """The daemon on its configured address inside this process, or the configured URL."""
    if settings.run.daemon_url:
        yield settings.run.daemon_url, None
        return
    models = sorted({p.model for p in personas})
    settings = settings.model_copy(
        update={"models": settings.models.model_copy(update={"preload": models})}
    )
    async with serve(settings) as served:
        yield served.url, served


def _status(served: Served | None, host: PersonaHost) -> str:
    parts = []
    if served is not None:
        manager = served.daemon.manager
        depth = sum(manager.queue_depths().values())
        parts.append(f"models: {', '.join(manager.loaded) or 'none'}; queue: {depth}")
    parts.append(host.status())
    return "; ".join(parts)


_reloads: set[asyncio.Future[list[str]]] = set()


def _reload(settings: Settings, served: Served | None, host: PersonaHost) -> None:
    """SIGHUP: re-read model and persona manifests; connections stay up."""
    daemon = served.daemon if served is not None else None
    if daemon is not None:
        cfg = settings.models
        catalog = Catalog.load(cfg.dir, include_demo=cfg.include_demo)
        daemon.catalog = catalog
        daemon.manager.catalog = catalog
        # A model that failed for good (its runner kept crashing) gets another chance.
        _reloads.add(task := asyncio.ensure_future(daemon.reload_failed()))
        task.add_done_callback(_reloads.discard)
    host.reload(load_personas(settings.run.personas_dir, settings.run.personas))
    log.info(
        "manifests_reloaded",
        models=len(daemon.catalog.names) if daemon else None,
        personas=len(host.engines),
    )


async def _until_stopped(
    settings: Settings,
    served: Served | None,
    host: PersonaHost,
    notifier: Notifier,
    stop: asyncio.Event,
) -> None:
    """Serve until a bridge ends or a stop signal arrives, then drain."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, _reload, settings, served, host)
    notifier.notify(READY=1, STATUS=_status(served, host))
    log.info("ready", personas=[e.name for e in host.engines], bridges=settings.run.bridges)
    # The watchdog is fed only while the daemon's supervisor does its work: a runner that
    # cannot be killed stops it, and systemd restarts the service.
    alive = served.daemon.supervisor_alive if served is not None else None
    watchdog = asyncio.ensure_future(notifier.watchdog(lambda: _status(served, host), alive))
    waits = [asyncio.ensure_future(host.wait_closed()), asyncio.ensure_future(stop.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    log.info("stopping")
    if served is not None:
        await served.drain()
    watchdog.cancel()


def _show(settings: Settings, served: Served | None, host: PersonaHost) -> list[tuple[str, str]]:
    """Mount the bridges' pages and the personas' dashboard; (persona, URL) of each page."""
    pages = [b for b in host.bridges if isinstance(b, HttpPage)]
    if served is None:
        if pages:
            raise StartupError(
                "the web bridge needs personad's own HTTP server, but run.daemon_url is set",
                "remove run.daemon_url, or run the web bridge in a personad without it",
            )
        return []
    served.show(EngineBoard(host.engines))
    return [(b.persona, served.mount(b.http_mount(settings))) for b in pages]


async def run(
    settings: Settings,
    notifier: Notifier | None = None,
    on_ready: Callable[[list[tuple[str, str]]], None] | None = None,
) -> int:
    """Run the personas on their bridges until a bridge ends or a stop signal arrives.

    ``on_ready`` gets the (persona, URL) of every bridge page once everything has started.

    A stop signal during start-up (a model still loading, a bridge still connecting) ends
    the start-up at once.
    """
    notifier = notifier or Notifier(None)
    personas = load_personas(settings.run.personas_dir, settings.run.personas)
    secure_data_dir(settings.data_dir)
    signals = StopSignals(
        lambda: notifier.notify(STOPPING=1, STATUS="stopping: finishing running generations")
    )
    key = settings.server.api_key
    with signals.installed():
        async with contextlib.AsyncExitStack() as stack:
            started: tuple[Served | None, PersonaHost] | None = None
            with signals.starting():
                url, served = await stack.enter_async_context(_model_server(settings, personas))
                client = DaemonClient(url, api_key=key.get_secret_value() if key else None)
                stack.push_async_callback(client.aclose)
                host = await stack.enter_async_context(PersonaHost(settings, personas, client))
                pages = _show(settings, served, host)
                started = served, host
                if on_ready is not None:
                    on_ready(pages)
            if started is not None and not signals.stopping.is_set():
                await _until_stopped(settings, *started, notifier, signals.stopping)
    log.info("stopped")
    return 0


Config = Annotated[Path | None, typer.Option("--config", "-c", help="personad config file.")]
Bridges = Annotated[
    list[str] | None,
    typer.Option(
        "--bridge", "-b", help="Run on this bridge (repeatable), instead of [run] bridges."
    ),
]


def _print_pages(pages: list[tuple[str, str]]) -> None:
    for persona, url in pages:
        typer.echo(f"chat with {persona} at {url}", err=False)
    if pages:
        typer.echo(f"dashboard at {pages[0][1].split('/chat/')[0]}/dashboard")


def run_cmd(config: Config = None, bridge: Bridges = None) -> None:
    """Run the personas on the enabled bridges, with the daemon in the same process."""
    settings = load_settings(config)
    if bridge:
        chosen = settings.run.model_copy(update={"bridges": list(dict.fromkeys(bridge))})
        settings = settings.model_copy(update={"run": chosen})
    restrict_umask()
    stream: TextIO = sys.stdout
    fmt: Literal["auto", "console", "json"] = settings.log.format
    if "console" in settings.run.bridges:
        # The terminal belongs to the conversation: the log goes to a file.
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        stream = (settings.data_dir / "personad.log").open("a", encoding="utf-8")
        fmt = "json" if settings.log.format == "auto" else settings.log.format
    configure_logging(
        level=settings.log.level, fmt=fmt, secrets=settings.secret_values(), stream=stream
    )
    # systemd passes NOTIFY_SOCKET and WATCHDOG_USEC to the process it supervises.
    notifier = Notifier.from_environ(os.environ)
    try:
        code = asyncio.run(run(settings, notifier, _print_pages))
    finally:
        notifier.close()
    raise typer.Exit(code)
