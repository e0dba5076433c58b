"""The personas of one ``personad run`` on their bridges: store, clock, scheduler, engines.

The host reaches the model server only through the client it is given, so the same personas
run against the daemon in this process, one elsewhere, or any OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import structlog

from daemon.client import DaemonClient
from daemon.settings import Settings
from models import PersonaManifest

from ._api import Bridge
from ._completer import DaemonCompleter
from ._registry import build_bridge, load_bridge_class
from ._store import Store
from ._time import APScheduler, SystemClock
from .persona import PersonaEngine

__all__ = ["PersonaHost"]

log = structlog.get_logger("personad.run")


class PersonaHost:
    """Runs ``personas`` on the bridges ``settings.run.bridges`` names.

    Use it as an async context manager: entering connects every bridge and starts every
    persona's day; leaving stops them and closes the database, also after a failed start.
    """

    def __init__(
        self,
        settings: Settings,
        personas: Sequence[PersonaManifest],
        client: DaemonClient,
    ) -> None:
        self._settings = settings
        self._personas = list(personas)
        self._client = client
        self._stack = contextlib.AsyncExitStack()
        self.engines: list[PersonaEngine] = []
        self.bridges: list[Bridge] = []

    async def __aenter__(self) -> PersonaHost:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        settings = self._settings
        store = Store(settings.data_dir / "personad.db")
        self._stack.callback(store.close)
        clock = SystemClock(settings.run.start_time)
        scheduler = APScheduler(clock)
        scheduler.start()
        self._stack.callback(scheduler.shutdown)
        rng = random.Random(settings.run.seed)
        for persona in self._personas:
            engine = PersonaEngine(
                persona,
                DaemonCompleter(self._client, persona.model, persona.adapter),
                store,
                clock,
                scheduler,
                random.Random(rng.random()),
            )
            for name in settings.run.bridges:
                bridge = build_bridge(
                    name,
                    self._options(name),
                    engine,
                    persona=persona.name,
                    clock=clock,
                )
                engine.attach(bridge)
                self.bridges.append(bridge)
            self.engines.append(engine)
        for bridge in self.bridges:
            self._stack.push_async_callback(bridge.stop)
            await bridge.start()
            log.info("bridge_started", bridge=bridge.name, persona=bridge.persona)
        for engine in self.engines:
            self._stack.push_async_callback(engine.stop)
            await engine.start()

    def _options(self, name: str) -> dict[str, Any]:
        """The bridge's table; a bridge that keeps files (an Options field ``state_dir``) gets
        ``data_dir/<bridge>`` unless the table names a place."""
        options = dict(self._settings.bridges.get(name, {}))
        fields = load_bridge_class(name).Options.model_fields
        if "state_dir" in fields and options.get("state_dir") is None:
            options["state_dir"] = self._settings.data_dir / name
        return options

    def reload(self, personas: Sequence[PersonaManifest]) -> None:
        """Take new manifests for the personas that run (connections stay up)."""
        by_name = {e.name: e for e in self.engines}
        for persona in personas:
            engine = by_name.get(persona.name)
            if engine is not None:
                engine.reload(persona)

    async def wait_closed(self) -> None:
        """Return when the first bridge has ended (the console's /quit, a lost token)."""
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(b.wait_closed()) for b in self.bridges
        ]
        if not waits:
            await asyncio.Event().wait()
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def status(self) -> str:
        """One line for systemd's STATUS=: the bridges that run."""
        return f"bridges: {', '.join(sorted({b.name for b in self.bridges})) or 'none'}"
