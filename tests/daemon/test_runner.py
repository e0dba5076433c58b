"""Each model in a runner process: crashes, aborts and hangs cost that model a restart only."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon import PreloadFailed
from daemon._runner import RunnerSettings
from daemon._runner._process import RunnerProcess
from daemon._systemd import Notifier
from daemon.engine.worker import build_engine
from daemon.settings import ModelsSettings
from models import ModelManifest
from tests.conftest import NO_EOS, Running, make_settings, serve, write_model

HELLO = [{"role": "user", "content": "Say hello."}]
FAST = {"backoff": [0.05], "probe_interval": 300.0}


def abort_if_bad(manifest: ModelManifest, models: ModelsSettings, data_dir: Path) -> Any:
    """A runner factory (run in the runner) that aborts like llama.cpp on the model 'bad'."""
    if manifest.name == "bad":
        os.abort()
    return build_engine(manifest, models, data_dir)


def abort_after_first(manifest: ModelManifest, models: ModelsSettings, data_dir: Path) -> Any:
    """A runner factory whose model loads once, then aborts on every later load."""
    marker = data_dir / f"{manifest.name}.loaded"
    if marker.exists():
        os.abort()
    marker.touch()
    return build_engine(manifest, models, data_dir)


def _runner(running: Running, model: str = "smollm2") -> dict[str, Any]:
    runner: dict[str, Any] = running.health()["runners"][model]
    return runner


def _chat(running: Running, **body: Any) -> httpx.Response:
    payload = {"messages": HELLO, "max_tokens": 8, **body}
    return httpx.post(f"{running.url}/v1/chat/completions", json=payload, timeout=120)


@pytest.fixture
def demo(tmp_path: Path, demo_path: Path) -> Iterator[Running]:
    """A daemon with the demo model preloaded in a runner that restarts quickly."""
    settings = make_settings(tmp_path, preload=["smollm2"], kv_cache_ram_bytes=0)
    with serve(settings, wait_preload=True, runner=RunnerSettings(**FAST)) as running:
        yield running


def test_kill_9_during_a_stream_ends_it_with_an_error_event_and_the_next_request_works(
    demo: Running,
) -> None:
    """kill -9 of the runner mid-stream: an SSE error event, a restart, the same daemon PID,
    the KV files kept, and the next request (same conversation) answered from them."""
    first = _chat(demo, conversation="c1")
    assert first.status_code == 200
    kv_files = sorted(p for p in (demo.daemon.settings.data_dir / "kv").rglob("*") if p.is_file())
    assert kv_files, "the conversation's KV state is on disk"
    old_pid = _runner(demo)["pid"]
    body = {
        "messages": HELLO,
        "max_tokens": 1500,
        "stream": True,
        "logit_bias": NO_EOS,
    }
    events = []
    url = f"{demo.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=60) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[6:])
            if len(events) == 3:
                os.kill(old_pid, signal.SIGKILL)
    error = json.loads(events[-1])["error"]
    assert error["code"] == "runner_crashed"
    assert "SIGKILL" in error["message"]
    second = _chat(demo, conversation="c1")
    assert second.status_code == 200, second.text
    runner = _runner(demo)
    assert runner["state"] == "ready" and runner["pid"] not in (None, old_pid)
    assert runner["restarts"] == 1 and "SIGKILL" in runner["reason"]
    assert demo.metric("personad_runner_restarts_total", model="smollm2") == 1
    assert demo.metric("personad_runner_crashes_total", model="smollm2", reason="SIGKILL") == 1
    assert all(p.exists() for p in kv_files)
    assert demo.metric("personad_kv_cache_lookups_total", model="smollm2", result="hit") >= 1
    assert demo.health()["status"] == "ok"  # the daemon (this very process) never went down


def test_a_request_in_flight_without_streaming_gets_a_503(demo: Running) -> None:
    """A plain request whose runner dies under it gets a 503 JSON error naming the crash."""
    pid = _runner(demo)["pid"]
    box: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: box.append(_chat(demo, max_tokens=1500, logit_bias=NO_EOS))
    )
    thread.start()
    demo.wait(lambda h: h["running"]["smollm2"])
    time.sleep(0.3)  # let it generate a few tokens: the crash is mid-generation
    os.kill(pid, signal.SIGKILL)
    thread.join(60)
    assert box[0].status_code == 503
    assert box[0].json()["error"]["code"] == "runner_crashed"
    assert box[0].headers["Retry-After"] == "1"


def test_a_model_that_aborts_on_load_fails_that_model_only(tmp_path: Path, demo_path: Path) -> None:
    """A model whose load aborts the runner gets a clear error; the daemon and the other model
    go on."""
    write_model(tmp_path / "models", "bad", demo_path)
    settings = make_settings(tmp_path)
    runner = RunnerSettings(factory="tests.daemon.test_runner:abort_if_bad", **FAST)
    with serve(settings, runner=runner) as running:
        bad = _chat(running, model="bad")
        assert bad.status_code == 500
        error = bad.json()["error"]
        assert error["code"] == "model_load_failed"
        assert "SIGABRT" in error["message"]
        assert _chat(running).status_code == 200
        assert running.health()["status"] == "ok"


def test_a_preloaded_model_that_aborts_on_load_stops_the_start_up(
    tmp_path: Path, demo_path: Path
) -> None:
    """A model asked for at start-up whose first load aborts still stops the start-up."""
    write_model(tmp_path / "models", "bad", demo_path)
    settings = make_settings(tmp_path, preload=["bad"])
    runner = RunnerSettings(factory="tests.daemon.test_runner:abort_if_bad", **FAST)
    with (
        pytest.raises(PreloadFailed, match="SIGABRT"),
        serve(settings, wait_preload=True, runner=runner),
    ):
        pass


def test_a_model_whose_restarts_all_abort_is_failed_until_reloaded(
    tmp_path: Path, demo_path: Path
) -> None:
    """After the backoff gives up the model is 'failed' (503, /health says why); the other
    model still answers, and a reload brings it back."""
    write_model(tmp_path / "models", "other", demo_path)
    settings = make_settings(tmp_path, preload=["smollm2", "other"])
    runner = RunnerSettings(
        factory="tests.daemon.test_runner:abort_after_first", backoff=[0.05, 0.05]
    )
    with serve(settings, wait_preload=True, runner=runner) as running:
        os.kill(_runner(running)["pid"], signal.SIGKILL)
        running.wait(lambda h: h["runners"]["smollm2"]["state"] == "failed")
        health = running.health()
        assert health["status"] == "degraded"
        assert "smollm2" in health["degraded"] and "other" not in health["degraded"]
        assert health["runners"]["smollm2"]["crashes"] == {"SIGKILL": 1, "SIGABRT": 2}
        failed = _chat(running)
        assert failed.status_code == 503
        assert failed.json()["error"]["code"] == "model_failed"
        assert _chat(running, model="other").status_code == 200
        for marker in (settings.data_dir).glob("*.loaded"):
            marker.unlink()
        future = asyncio.run_coroutine_threadsafe(running.daemon.reload_failed(), _loop(running))
        assert future.result(60) == ["smollm2"]
        assert _chat(running).status_code == 200


def _loop(running: Running) -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop = running.daemon.manager.slots()[0].worker.get_loop()  # type: ignore[union-attr]
    return loop


class _Watchdog:
    """systemd's side of sd_notify: a datagram socket recording (time, message)."""

    def __init__(self, path: Path, daemon: Any) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.notifier = Notifier(str(path), watchdog_usec=100_000)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._receive, daemon=True),
            threading.Thread(
                target=asyncio.run,
                args=(self._ping(daemon),),
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

    async def _ping(self, daemon: Any) -> None:
        task = asyncio.ensure_future(self.notifier.watchdog(lambda: "ok", daemon.supervisor_alive))
        await asyncio.to_thread(self._stop.wait)
        task.cancel()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def pings(self, start: float, end: float) -> int:
        return sum(1 for t, m in self.messages if start <= t <= end and "WATCHDOG=1" in m)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self.notifier.close()
        self.sock.close()


# The deadline leaves room for a 2-core machine shared with other test runs.
PROBED = {"probe_interval": 0.3, "probe_deadline": 5.0, "kill_deadline": 3.0, "backoff": [0.05]}


def test_a_stopped_runner_is_found_by_the_probe_and_restarted_within_the_deadline(
    tmp_path: Path,
) -> None:
    """SIGSTOP: the probe misses its deadline, the runner is killed and restarted in time, and
    the watchdog, fed before, is fed again after."""
    settings = make_settings(tmp_path, preload=["smollm2"])
    with serve(settings, wait_preload=True, runner=RunnerSettings(**PROBED)) as running:
        dog = _Watchdog(tmp_path / "notify", running.daemon)
        try:
            time.sleep(0.5)
            pid = _runner(running)["pid"]
            stopped = time.monotonic()
            os.kill(pid, signal.SIGSTOP)
            # interval + deadline + kill, plus a model load: the configured bound.
            running.wait(lambda h: h["runners"]["smollm2"]["restarts"] == 1, timeout=40)
            took = time.monotonic() - stopped
            runner = _runner(running)
            assert runner["crashes"] == {"probe_timeout": 1}
            assert "liveness probe gave no token within 5 s" in runner["reason"]
            assert runner["pid"] != pid
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
            assert _chat(running).status_code == 200
            time.sleep(0.5)
            assert dog.pings(stopped - 0.5, stopped) >= 3, "fed before"
            assert dog.pings(stopped + took, time.monotonic()) >= 3, "fed again after"
            assert took < 0.3 + 5.0 + 3.0 + 20
        finally:
            dog.close()


def test_the_watchdog_starves_while_a_stuck_runner_cannot_be_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner that survives its kill stops the watchdog pings (systemd then restarts the
    service) and /health says the model is unresponsive; once it is gone, pings resume."""
    monkeypatch.setattr(RunnerProcess, "kill", lambda self, reason, kind, deadline: False)
    settings = make_settings(tmp_path, preload=["smollm2"])
    with serve(settings, wait_preload=True, runner=RunnerSettings(**PROBED)) as running:
        dog = _Watchdog(tmp_path / "notify", running.daemon)
        try:
            pid = _runner(running)["pid"]
            os.kill(pid, signal.SIGSTOP)
            running.wait(lambda h: "smollm2" in h.get("degraded", {}), timeout=10)
            health = running.health()
            assert health["degraded"]["smollm2"].startswith("unresponsive")
            starved = time.monotonic()
            time.sleep(1.0)
            assert dog.pings(starved, time.monotonic()) == 0
            assert any(t > starved and "STATUS=ok" in m for t, m in dog.messages)
            os.kill(pid, signal.SIGKILL)
            running.wait(lambda h: h["runners"]["smollm2"]["restarts"] == 1, timeout=30)
            back = time.monotonic()
            time.sleep(0.5)
            assert dog.pings(back, time.monotonic()) >= 3
        finally:
            dog.close()
