"""`personad run`: the daemon and the enabled bridges in one process, as a systemd service.

Lifecycle: load models, connect bridges, then ``READY=1``. A watchdog coroutine pings systemd
and refreshes ``STATUS=``. SIGTERM/SIGINT: ``STOPPING=1``, new requests get 503, running
generations finish (up to ``drain_timeout``), bridges and state are closed, exit 0; a second
signal exits at once. SIGHUP reloads model and persona manifests; bridges stay connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import AsyncIterator
from typing import Any

import structlog

from daemon import Daemon, DaemonClient, Settings
from daemon._systemd import Notifier
from models import Catalog, PersonaManifest, load_personas

from ._api import Bridge
from ._behaviour import PersonaEngine
from ._completer import DaemonCompleter
from ._registry import build_bridge
from ._store import Store
from ._time import APScheduler, SystemClock

__all__ = ["run"]

log = structlog.get_logger("personad.run")


@contextlib.asynccontextmanager
async def _daemon(
    settings: Settings, personas: list[PersonaManifest]
) -> AsyncIterator[tuple[str, Daemon | None]]:
    """The daemon on its configured address inside this process, or the configured URL."""
    if settings.run.daemon_url:
        yield settings.run.daemon_url, None
        return
    import uvicorn

    from daemon import create_app

    models = sorted({p.model for p in personas})
    settings = settings.model_copy(
        update={"models": settings.models.model_copy(update={"preload": models})}
    )
    daemon = Daemon(settings)

    class _Server(uvicorn.Server):
        # Signals are ours to handle: a stop request drains first, then ends the server.
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    server = _Server(
        uvicorn.Config(
            create_app(daemon),
            host=settings.server.host,
            port=settings.server.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(settings.server.drain_timeout) + 1,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the daemon stopped during start-up")
        await asyncio.sleep(0.05)
    try:
        yield f"http://{settings.server.host}:{settings.server.port}", daemon
    finally:
        server.should_exit = True
        await task


async def _wait_loaded(client: DaemonClient, models: set[str]) -> None:
    while True:
        health = await client.health()
        if health.get("status") == "ok" and models <= set(health.get("loaded", [])):
            return
        await asyncio.sleep(0.1)


async def _drain(daemon: Daemon, limit: float) -> None:
    """Refuse new requests and let running generations finish, for at most ``limit`` s."""
    daemon.service.accepting = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while daemon.manager.busy:
        if loop.time() >= deadline:
            log.warning("drain_timeout", seconds=limit)
            return
        await asyncio.sleep(0.05)


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
            engine.persona, engine.b = persona, persona.behaviour
    log.info(
        "manifests_reloaded",
        models=len(daemon.catalog.names) if daemon else None,
        personas=len(engines),
    )


async def run(settings: Settings, notifier: Notifier | None = None) -> int:
    """Run the personas on their bridges until a bridge ends or a stop signal arrives."""
    notifier = notifier or Notifier(None)
    personas = load_personas(settings.run.personas_dir, settings.run.personas)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_stop() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second_signal_exiting_now")
            os._exit(1)
        notifier.notify(STOPPING=1, STATUS="stopping: finishing running generations")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_stop)
    async with contextlib.AsyncExitStack() as stack:
        url, daemon = await stack.enter_async_context(_daemon(settings, personas))
        key = settings.server.api_key
        client = DaemonClient(url, api_key=key.get_secret_value() if key else None)
        stack.push_async_callback(client.aclose)
        if daemon is not None:
            await _wait_loaded(client, {p.model for p in personas})
        store = Store(settings.data_dir / "personad.db")
        stack.callback(store.close)
        clock = SystemClock()
        scheduler = APScheduler(clock)
        scheduler.start()
        stack.callback(scheduler.shutdown)
        rng = random.Random(settings.run.seed)
        engines: list[PersonaEngine] = []
        bridges: list[Bridge] = []
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
                bridges.append(bridge)
            engines.append(engine)
        for bridge in bridges:
            stack.push_async_callback(bridge.stop)
            await bridge.start()
            log.info("bridge_started", bridge=bridge.name, persona=bridge.persona)
        for engine in engines:
            stack.push_async_callback(engine.stop)
            await engine.start()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, _reload, settings, daemon, engines)
        notifier.notify(READY=1, STATUS=_status(daemon, bridges))
        log.info("ready", personas=[p.name for p in personas], bridges=settings.run.bridges)
        watchdog = asyncio.ensure_future(notifier.watchdog(lambda: _status(daemon, bridges)))
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(b.wait_closed()) for b in bridges]
        waits.append(asyncio.ensure_future(stop.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        log.info("stopping")
        if daemon is not None:
            await _drain(daemon, settings.server.drain_timeout)
        watchdog.cancel()
    log.info("stopped")
    return 0
