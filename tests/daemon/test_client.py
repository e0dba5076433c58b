"""DaemonClient.drop_conversation over real HTTP: personad's route, and servers without it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from daemon import DaemonClient
from daemon._kvfiles import state_file, write_state

from ..conftest import free_port, make_settings, serve


def _kv_file(kv_dir: Path, conversation: str) -> Path:
    """A stored KV state of ``conversation`` (no adapter) for some model identity."""
    directory = kv_dir / "0123456789abcdef"
    directory.mkdir(parents=True, exist_ok=True)
    key = f"\x1f{conversation}"
    path = state_file(directory, key)
    state = np.frombuffer(b"state", dtype=np.uint8)
    write_state(path, "0123456789abcdef", key, np.arange(4, dtype=np.intc), state)
    return path


def test_drop_conversation_reaches_personads_route(tmp_path: Path) -> None:
    """A conversation key with slashes reaches the daemon intact; its state file goes."""
    settings = make_settings(tmp_path)
    mine = _kv_file(settings.data_dir / "kv", "Robin/fake/general")
    other = _kv_file(settings.data_dir / "kv", "Robin/fake/random")

    async def drop(url: str) -> int:
        async with DaemonClient(url) as client:
            return await client.drop_conversation("Robin/fake/general")

    with serve(settings) as running:
        assert asyncio.run(drop(running.url)) == 1
    assert not mine.exists() and other.exists()


@contextmanager
def _other_server() -> Iterator[str]:
    """An OpenAI-compatible server that knows nothing of conversations (like llama-server)."""

    async def health(request: object) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/health", health)])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started and time.monotonic() < end:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_server_without_the_route_has_nothing_to_drop() -> None:
    """A 404 from a server that lacks the route is 0 dropped, not an error."""

    async def drop(url: str) -> int:
        async with DaemonClient(url) as client:
            return await client.drop_conversation("Robin/fake/general")

    with _other_server() as url:
        assert asyncio.run(drop(url)) == 0
