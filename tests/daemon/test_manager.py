"""Several models at once: LRU eviction, Ollama's keep_alive, and loading seen in /health."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx

from daemon._daemon import Daemon, _default_loader
from models import Catalog, ModelManifest
from tests.conftest import make_settings, serve, write_model
from tests.daemon.test_queue import FakeClock


def _daemon(tmp_path: Path, demo_path: Path, clock: FakeClock, **models: Any) -> Daemon:
    for name in ("a", "b", "c"):
        write_model(tmp_path / "models", name, demo_path, context_length=256)
    settings = make_settings(tmp_path, include_demo=False, **models)
    return Daemon(settings, clock=clock)


def test_lru_eviction_under_max_loaded_models(tmp_path: Path, demo_path: Path) -> None:
    """Loading a third model evicts the least recently used idle one."""

    async def scenario() -> None:
        d = _daemon(tmp_path, demo_path, FakeClock(), max_loaded_models=2, keep_alive=-1)
        m = d.manager
        for name in ("a", "b", "a", "c"):
            m.release(await m.acquire(name))
        assert m.loaded == ["a", "c"]  # b was least recently used
        await d.aclose()
        assert m.loaded == []

    asyncio.run(scenario())


def test_busy_model_is_not_evicted(tmp_path: Path, demo_path: Path) -> None:
    """A model with a request in flight stays; the newcomer waits for one to become idle."""

    async def scenario() -> None:
        d = _daemon(tmp_path, demo_path, FakeClock(), max_loaded_models=1, keep_alive=-1)
        m = d.manager
        held = await m.acquire("a")
        waiter = asyncio.create_task(m.acquire("b"))
        await asyncio.sleep(0.2)
        assert not waiter.done() and m.loaded == ["a"]
        m.release(held)
        slot = await waiter
        assert m.loaded == ["b"]
        m.release(slot)
        await d.aclose()

    asyncio.run(scenario())


def test_keep_alive_zero_unloads_at_once(tmp_path: Path, demo_path: Path) -> None:
    """keep_alive 0 unloads a model as soon as its last request ends."""

    async def scenario() -> None:
        d = _daemon(tmp_path, demo_path, FakeClock(), keep_alive=0)
        m = d.manager
        m.release(await m.acquire("a"))
        for _ in range(100):
            if not m.loaded:
                break
            await asyncio.sleep(0.01)
        assert m.loaded == []
        await d.aclose()

    asyncio.run(scenario())


def test_keep_alive_seconds_on_a_fake_clock(tmp_path: Path, demo_path: Path) -> None:
    """A positive keep_alive unloads after that many idle seconds, not before."""

    async def scenario() -> None:
        clock = FakeClock()
        d = _daemon(tmp_path, demo_path, clock, keep_alive=300)
        m = d.manager
        m.release(await m.acquire("a"))
        clock.now += 299
        assert await m.reap_idle() == []
        clock.now += 2
        assert await m.reap_idle() == ["a"]
        assert m.loaded == []
        await d.aclose()

    asyncio.run(scenario())


def test_negative_keep_alive_keeps_forever(tmp_path: Path, demo_path: Path) -> None:
    """A negative keep_alive never unloads an idle model."""

    async def scenario() -> None:
        clock = FakeClock()
        d = _daemon(tmp_path, demo_path, clock, keep_alive=-1)
        m = d.manager
        m.release(await m.acquire("a"))
        clock.now += 10**9
        assert await m.reap_idle() == []
        assert m.loaded == ["a"]
        await d.aclose()

    asyncio.run(scenario())


def test_health_is_503_while_loading(tmp_path: Path, demo_path: Path) -> None:
    """While a model loads, /health answers 503 with the reason; then 200."""
    gate = threading.Event()

    def slow_loader(manifest: ModelManifest) -> Any:
        gate.wait(60)  # hold the load until the test has looked at /health
        return _default_loader(manifest)

    settings = make_settings(tmp_path, preload=["smollm2"])
    with serve(settings, loader=slow_loader) as running:
        running.wait(lambda h: h["loading"] == ["smollm2"])
        r = httpx.get(f"{running.url}/health")
        assert r.status_code == 503
        assert r.json()["status"] == "loading" and "smollm2" in r.json()["reason"]
        gate.set()
        running.wait(lambda h: h["status"] == "ok")
        assert running.health()["loaded"] == ["smollm2"]


def test_catalog_is_shared_with_the_api(tmp_path: Path, demo_path: Path) -> None:
    """The daemon serves exactly the catalogue it was given."""
    catalog = Catalog({}, {})
    catalog.add(ModelManifest(name="only", path=demo_path))
    with serve(make_settings(tmp_path), catalog=catalog) as running:
        ids = [m["id"] for m in httpx.get(f"{running.url}/v1/models").json()["data"]]
        assert ids == ["only"]
