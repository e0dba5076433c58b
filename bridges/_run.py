"""`personad run`: the daemon and the enabled bridges in one process."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import AsyncIterator
from typing import Any

import structlog

from daemon import DaemonClient, Settings
from models import PersonaManifest, load_personas

from ._api import Bridge
from ._behaviour import PersonaEngine
from ._completer import DaemonCompleter
from ._registry import build_bridge
from ._store import Store
from ._time import APScheduler, SystemClock

__all__ = ["run"]

log = structlog.get_logger("personad.run")


@contextlib.asynccontextmanager
async def _daemon(settings: Settings, personas: list[PersonaManifest]) -> AsyncIterator[str]:
    """The daemon on its configured address inside this process, or the configured URL."""
    if settings.run.daemon_url:
        yield settings.run.daemon_url
        return
    import uvicorn

    from daemon import Daemon, create_app

    models = sorted({p.model for p in personas})
    settings = settings.model_copy(
        update={"models": settings.models.model_copy(update={"preload": models})}
    )

    class _Server(uvicorn.Server):
        # Signals are ours to handle: a stop request ends the bridges first, then this.
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    server = _Server(
        uvicorn.Config(
            create_app(Daemon(settings)),
            host=settings.server.host,
            port=settings.server.port,
            log_config=None,
            access_log=False,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the daemon stopped during start-up")
        await asyncio.sleep(0.05)
    try:
        yield f"http://{settings.server.host}:{settings.server.port}"
    finally:
        server.should_exit = True
        await task


async def _wait_loaded(client: DaemonClient, models: set[str]) -> None:
    while True:
        health = await client.health()
        if health.get("status") == "ok" and models <= set(health.get("loaded", [])):
            return
        await asyncio.sleep(0.1)


async def run(settings: Settings) -> int:
    """Run the personas on their bridges until a bridge ends or a stop signal arrives."""
    personas = load_personas(settings.run.personas_dir, settings.run.personas)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(_daemon(settings, personas))
        key = settings.server.api_key
        client = DaemonClient(url, api_key=key.get_secret_value() if key else None)
        stack.push_async_callback(client.aclose)
        if not settings.run.daemon_url:
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
                DaemonCompleter(client, persona.model),
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
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(b.wait_closed()) for b in bridges]
        waits.append(asyncio.ensure_future(stop.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        log.info("stopping")
    return 0
