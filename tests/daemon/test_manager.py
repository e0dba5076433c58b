"""Several models at once: LRU eviction, Ollama's keep_alive, and loading seen in /health."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import generate_latest

from daemon._daemon import Daemon, _default_loader
from daemon._manager import ModelManager, ModelSlot
from daemon._metrics import Metrics
from daemon._types import GenerationParams
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


def _kv_manager(tmp_path: Path, demo_path: Path) -> tuple[ModelManager, Metrics, Path]:
    """A manager with the real loader and its KV files in data_dir/kv, as the daemon runs it."""
    # Different contexts: each model has its own KV directory.
    for name, n_ctx in (("a", 256), ("b", 512)):
        write_model(tmp_path / "models", name, demo_path, context_length=n_ctx)
    settings = make_settings(tmp_path, include_demo=False)
    kv_dir = settings.data_dir / "kv"
    metrics = Metrics()
    manager = ModelManager(
        Catalog.load(tmp_path / "models", include_demo=False),
        max_loaded=2,
        keep_alive=-1,
        queue_size=4,
        metrics=metrics,
        loader=functools.partial(_default_loader, settings=settings),
        clock=FakeClock(),
        kv_dir=kv_dir,
    )
    return manager, metrics, kv_dir


def _say(slot: ModelSlot, text: str, conversation: str) -> None:
    params = GenerationParams(max_tokens=2, temperature=0.0)
    prompt = slot.model.text_prompt(text * 8)
    list(slot.model.generate(prompt, params, threading.Event(), conversation=conversation))


def _conversations(kv_dir: Path) -> list[str]:
    found = []
    for path in sorted(kv_dir.glob("*/*.kv")):
        raw = path.read_bytes()
        n = int.from_bytes(raw[6:10], "little")
        found.append(json.loads(raw[10 : 10 + n])["key"].split("\x1f")[1])
    return sorted(found)


def test_drop_conversation_reaches_every_model(tmp_path: Path, demo_path: Path) -> None:
    """A dropped conversation leaves loaded models' RAM and disk, and unloaded models' files."""

    async def scenario() -> None:
        m, _, kv_dir = _kv_manager(tmp_path, demo_path)
        b = await m.acquire("b")
        _say(b, "Alice wrote something private. ", "alice-dm")
        _say(b, "The group talked about hiking. ", "group")
        m.release(b)
        await m.unload("b", reason="test")  # b's states are files now
        a = await m.acquire("a")
        _say(a, "Alice wrote something private. ", "alice-dm")
        _say(a, "The group talked about hiking. ", "group")
        m.release(a)
        assert _conversations(kv_dir) == ["alice-dm", "group"]  # b's; a's are in RAM
        assert m.drop_conversation("alice-dm") == 2
        assert _conversations(kv_dir) == ["group"]
        assert [k.split("\x1f")[1] for k in a.model.kv.ram] == ["group"]
        await m.aclose()  # flushing RAM at shutdown brings nothing back
        assert _conversations(kv_dir) == ["group", "group"]
        assert m.drop_conversation("group") == 2 and _conversations(kv_dir) == []

    asyncio.run(scenario())


def test_discarded_state_files_are_counted_in_metrics(tmp_path: Path, demo_path: Path) -> None:
    """A broken state file is reported in /metrics by model and reason, also after unloading."""

    async def scenario() -> None:
        m, metrics, _ = _kv_manager(tmp_path, demo_path)
        a = await m.acquire("a")
        directory = a.model.kv.directory
        m.release(a)
        await m.unload("a", reason="test")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "broken.kv").write_bytes(b"PDKV1\n\x05\x00\x00\x00{oops")
        m.release(await m.acquire("a"))
        sample = 'personad_kv_states_discarded_total{model="a",reason="malformed"} 1.0'
        assert sample in generate_latest(metrics.registry).decode()
        await m.unload("a", reason="test")
        assert sample in generate_latest(metrics.registry).decode()
        assert not (directory / "broken.kv").exists()
        await m.aclose()

    asyncio.run(scenario())
