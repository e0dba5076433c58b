"""A running web room for browser tests: the daemon (scripted model) on loopback with the web
bridge mounted, Robin's engine on a clock the test moves, all in one background loop."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import threading
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bridges import APScheduler, DaemonCompleter, PersonaEngine, Store, SystemClock, build_bridge
from bridges.web import WebBridge
from daemon import Served, Settings
from daemon import serve as daemon_serve
from daemon._run import EngineBoard
from daemon.client import DaemonClient
from daemon.testing import ScriptedLoader
from models import demo_persona, load_persona

T = TypeVar("T")

# A Monday evening: awake, and four hours before Robin's bedtime.
EVENING = datetime.fromisoformat("2026-03-02T19:00:00+00:00")


def robin_on_the_web(directory: Path) -> Path:
    """The demo persona, allowed to speak in the web room (its manifest file)."""
    shipped = demo_persona().source
    assert shipped is not None
    text = shipped.read_text().replace('channels = ["console"]', 'channels = ["console", "web"]')
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "demo.toml"
    path.write_text(text)
    return path


@dataclass
class Site:
    """The running room: its page's URL, the daemon's URL, the persona's clock."""

    url: str
    base: str
    clock: SystemClock
    engine: PersonaEngine
    bridge: WebBridge
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Awaitable[T], timeout: float = 60) -> T:
        """Run ``coro`` on the site's loop and return its result."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return future.result(timeout)


@contextlib.contextmanager
def web_site(
    settings: Settings, tmp: Path, loader: ScriptedLoader, start: datetime = EVENING
) -> Iterator[Site]:
    """Serve the room until the block ends."""
    box: queue.Queue[Any] = queue.Queue()
    persona = load_persona(robin_on_the_web(tmp / "personas"))

    async def main() -> None:
        stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            served: Served = await stack.enter_async_context(daemon_serve(settings, loader=loader))
            key = settings.server.api_key
            client = DaemonClient(served.url, api_key=key.get_secret_value() if key else None)
            stack.push_async_callback(client.aclose)
            store = Store(settings.data_dir / "personad.db")
            stack.callback(store.close)
            clock = SystemClock(start)
            scheduler = APScheduler(clock)
            scheduler.start()
            stack.callback(scheduler.shutdown)
            engine = PersonaEngine(
                persona,
                DaemonCompleter(client, persona.model),
                store,
                clock,
                scheduler,
                random.Random(1),
            )
            bridge = build_bridge(
                "web", settings.bridges.get("web", {}), engine, persona="Robin", clock=clock
            )
            assert isinstance(bridge, WebBridge)
            engine.attach(bridge)
            stack.push_async_callback(bridge.stop)
            await bridge.start()
            stack.push_async_callback(engine.stop)
            await engine.start()
            url = served.mount(bridge.http_mount(settings))
            served.show(EngineBoard([engine]))
            box.put(Site(url, served.url, clock, engine, bridge, asyncio.get_running_loop()))
            box.put(stop)
            await stop.wait()

    def in_thread() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the test's thread
            box.put(exc)

    thread = threading.Thread(target=in_thread, daemon=True)
    thread.start()
    site = box.get(timeout=120)
    if isinstance(site, BaseException):
        raise site
    stop = box.get(timeout=10)
    try:
        yield site
    finally:
        site.loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=60)
    if not box.empty():
        failure = box.get()
        raise failure
