"""`personad run`: the daemon and the enabled bridges in one process, as a systemd service.

Lifecycle: load models, connect bridges, then ``READY=1``. A watchdog coroutine pings systemd
and refreshes ``STATUS=``. SIGTERM/SIGINT: ``STOPPING=1``, new requests get 503, running
generations finish (up to ``drain_timeout``), bridges and state are closed, exit 0; a second
signal exits at once. A stop signal during start-up (a model loading, a bridge connecting)
ends it without waiting; a model that cannot be loaded ends it with an error. SIGHUP reloads
model and persona manifests; bridges stay connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog

from daemon import Daemon, DaemonClient, Served, Settings, StopSignals, secure_data_dir, serve
from daemon._systemd import Notifier
from models import Catalog, PersonaManifest, load_personas

from ._api import Bridge
from ._completer import DaemonCompleter
from ._registry import build_bridge
from ._store import Store
from ._time import APScheduler, SystemClock
from .persona import PersonaEngine

__all__ = ["run"]

log = structlog.get_logger("personad.run")


@contextlib.asynccontextmanager
async def _daemon(
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


def _status(daemon: Daemon | None, bridges: list[Bridge]) -> str:
    parts = []
    if daemon is not None:
        depth = sum(daemon.manager.queue_depths().values())
        parts.append(f"models: {', '.join(daemon.manager.loaded) or 'none'}; queue: {depth}")
    parts.append(f"bridges: {', '.join(sorted({b.name for b in bridges})) or 'none'}")
    return "; ".join(parts)


def _reload(settings: Settings, daemon: Daemon | None, engines: list[PersonaEngine]) -> None:
    """SIGHUP: re-read model and persona manifests; connections stay up."""
    if daemon is not None:
        cfg = settings.models
        catalog = Catalog.load(cfg.dir, include_demo=cfg.include_demo)
        daemon.catalog = catalog
        daemon.manager.catalog = catalog
    by_name = {e.name: e for e in engines}
    for persona in load_personas(settings.run.personas_dir, settings.run.personas):
        engine = by_name.get(persona.name)
        if engine is not None:
            engine.reload(persona)
    log.info(
        "manifests_reloaded",
        models=len(daemon.catalog.names) if daemon else None,
        personas=len(engines),
    )


@dataclass
class _Started:
    served: Served | None
    engines: list[PersonaEngine]
    bridges: list[Bridge]


async def _start(
    stack: contextlib.AsyncExitStack, settings: Settings, personas: list[PersonaManifest]
) -> _Started:
    """Daemon (models loaded), store, scheduler, engines and connected bridges."""
    url, served = await stack.enter_async_context(_daemon(settings, personas))
    key = settings.server.api_key
    client = DaemonClient(url, api_key=key.get_secret_value() if key else None)
    stack.push_async_callback(client.aclose)
    store = Store(settings.data_dir / "personad.db")
    stack.callback(store.close)
    clock = SystemClock()
    scheduler = APScheduler(clock)
    scheduler.start()
    stack.callback(scheduler.shutdown)
    rng = random.Random(settings.run.seed)
    started = _Started(served, [], [])
    for persona in personas:
        engine = PersonaEngine(
            persona,
            DaemonCompleter(client, persona.model, persona.adapter),
            store,
            clock,
            scheduler,
            random.Random(rng.random()),
        )
        for name in settings.run.bridges:
            bridge = build_bridge(
                name, settings.bridges.get(name, {}), engine, persona=persona.name
            )
            bridge.clock = clock
            engine.attach(bridge)
            started.bridges.append(bridge)
        started.engines.append(engine)
    for bridge in started.bridges:
        stack.push_async_callback(bridge.stop)
        await bridge.start()
        log.info("bridge_started", bridge=bridge.name, persona=bridge.persona)
    for engine in started.engines:
        stack.push_async_callback(engine.stop)
        await engine.start()
    return started


async def _until_stopped(
    settings: Settings, started: _Started, notifier: Notifier, stop: asyncio.Event
) -> None:
    """Serve until a bridge ends or a stop signal arrives, then drain."""
    daemon = started.served.daemon if started.served is not None else None
    bridges = started.bridges
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, _reload, settings, daemon, started.engines)
    notifier.notify(READY=1, STATUS=_status(daemon, bridges))
    log.info("ready", personas=[e.name for e in started.engines], bridges=settings.run.bridges)
    watchdog = asyncio.ensure_future(notifier.watchdog(lambda: _status(daemon, bridges)))
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(b.wait_closed()) for b in bridges]
    waits.append(asyncio.ensure_future(stop.wait()))
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    log.info("stopping")
    if started.served is not None:
        await started.served.drain()
    watchdog.cancel()


async def run(settings: Settings, notifier: Notifier | None = None) -> int:
    """Run the personas on their bridges until a bridge ends or a stop signal arrives.

    A stop signal during start-up (a model still loading, a bridge still connecting) ends
    the start-up at once.
    """
    notifier = notifier or Notifier(None)
    personas = load_personas(settings.run.personas_dir, settings.run.personas)
    secure_data_dir(settings.data_dir)
    signals = StopSignals(
        lambda: notifier.notify(STOPPING=1, STATUS="stopping: finishing running generations")
    )
    with signals.installed():
        async with contextlib.AsyncExitStack() as stack:
            started: _Started | None = None
            with signals.starting():
                started = await _start(stack, settings, personas)
            if started is not None and not signals.stopping.is_set():
                await _until_stopped(settings, started, notifier, signals.stopping)
    log.info("stopped")
    return 0
