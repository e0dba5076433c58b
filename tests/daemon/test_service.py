"""Running as a systemd service: unit files, sd_notify, watchdog, graceful stop, reload."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon._systemd import Notifier, UnitSpec, render_unit
from tests.conftest import NO_EOS, free_port, write_model

SPEC = UnitSpec(
    exe=Path(sys.executable),
    config=Path("/etc/personad/personad.toml"),
    data_dir=Path("/var/lib/personad"),
    cache_dir=Path("/var/cache/personad"),
    models_dir=Path("/etc/personad/models"),
    drain_timeout=30,
)


def _verify(unit: str, tmp_path: Path, scope: str) -> None:
    path = tmp_path / "personad.service"
    path.write_text(unit)
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700, exist_ok=True)
    args = ["systemd-analyze", *(["--user"] if scope == "user" else []), "verify", str(path)]
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )
    assert proc.returncode == 0 and not proc.stderr.strip() and not proc.stdout.strip(), (
        proc.stdout + proc.stderr
    )


@pytest.mark.parametrize("scope", ["user", "system"])
@pytest.mark.parametrize(
    "credentials", [(), (("bridges__discord__token", Path("/etc/personad/discord-token")),)]
)
def test_generated_units_verify(scope: str, credentials: Any, tmp_path: Path) -> None:
    """Every unit variant passes systemd-analyze verify without a single warning."""
    spec = UnitSpec(**{**SPEC.__dict__, "credentials": credentials})
    unit = render_unit(spec, scope)  # type: ignore[arg-type]
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=60",
        "Restart=on-failure",
        "TimeoutStopSec=60",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP",
    ):
        assert line in unit
    if scope == "system":
        for line in (
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            "ReadWritePaths=",
            "PrivateTmp=yes",
            "WantedBy=multi-user.target",
        ):
            assert line in unit
        assert "PrivateDevices=" not in unit  # llama.cpp must reach the GPU
    if credentials:
        assert "LoadCredential=bridges__discord__token:/etc/personad/discord-token" in unit
    _verify(unit, tmp_path, scope)


def test_service_install_print_and_write(tmp_path: Path) -> None:
    """--print writes to stdout; a user install writes ~/.config/systemd/user/personad.service."""
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / ".config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    printed = subprocess.run(
        [sys.executable, "-m", "daemon", "service", "install", "--print"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert printed.returncode == 0 and printed.stdout.startswith("[Unit]")
    assert " run" in printed.stdout and "WantedBy=default.target" in printed.stdout
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "service", "install", "--user"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    unit = tmp_path / ".config/systemd/user/personad.service"
    assert unit.read_text() == printed.stdout
    assert "systemctl --user daemon-reload" in done.stdout


class Listener:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, needle: str, timeout: float = 120) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for _, m in list(self.messages):
                if needle in m:
                    return m
            time.sleep(0.05)
        raise AssertionError(f"no {needle!r} in {self.messages}")

    def count(self, needle: str) -> int:
        return sum(needle in m for _, m in self.messages)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    """The notify socket, closed afterwards."""
    sock = Listener(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_notifier_sends_datagrams(listener: Listener) -> None:
    """notify() sends KEY=value lines to the socket path."""
    n = Notifier.from_environ({"NOTIFY_SOCKET": str(listener.path)})
    n.notify(READY=1, STATUS="loading")
    assert listener.wait_for("READY=1") == "READY=1\nSTATUS=loading"
    n.close()
    assert not Notifier.from_environ({}).enabled


def test_a_blocked_event_loop_stops_the_watchdog(listener: Listener) -> None:
    """Pings come from the event loop: while it is blocked, none arrive."""

    async def scenario() -> None:
        n = Notifier(str(listener.path), watchdog_usec=100_000)  # ping every 50 ms
        task = asyncio.ensure_future(n.watchdog(lambda: "ok"))
        await asyncio.sleep(0.5)
        time.sleep(1.0)  # noqa: ASYNC251 - blocking the loop is what this test is about
        await asyncio.sleep(0.5)
        task.cancel()
        n.close()

    asyncio.run(scenario())
    times = [t for t, m in listener.messages if "WATCHDOG=1" in m]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) > 10
    assert max(gaps) >= 0.95  # the stall
    assert sorted(gaps)[len(gaps) // 2] < 0.2  # otherwise regular pings


def _start(
    tmp_path: Path, listener: Listener, extra: str = ""
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    cfg = tmp_path / "personad.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[server]\nport = {port}\ndrain_timeout = 60\n'
        f'[models]\ndir = "{tmp_path / "models"}"\n'
        f'[run]\nbridges = []\npersonas_dir = "{tmp_path / "personas"}"\n{extra}'
    )
    env = {**os.environ, "NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "1000000"}
    # The log goes to a file: an unread pipe would fill up and block the daemon.
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "--config", str(cfg)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def test_ready_status_watchdog_and_graceful_stop(tmp_path: Path, listener: Listener) -> None:
    """READY after loading, STATUS and WATCHDOG pings, STOPPING on SIGTERM; a running
    generation completes, new requests get 503, and the exit code is 0."""
    proc, url = _start(tmp_path, listener)
    try:
        ready = listener.wait_for("READY=1")
        assert "models: smollm2" in ready
        listener.wait_for("WATCHDOG=1")
        result: dict[str, Any] = {}

        def generate() -> None:
            result["r"] = httpx.post(
                f"{url}/v1/completions",
                json={"prompt": "Count:", "max_tokens": 250, "logit_bias": NO_EOS},
                timeout=120,
            )

        worker = threading.Thread(target=generate)
        worker.start()
        while not httpx.get(f"{url}/health").json().get("running", {}).get("smollm2"):
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1")
        late = httpx.post(
            f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30
        )
        assert late.status_code == 503
        worker.join(timeout=120)
        assert result["r"].status_code == 200
        assert result["r"].json()["usage"]["completion_tokens"] == 250
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert listener.count("WATCHDOG=1") >= 1
    assert '"event": "stopped"' in (tmp_path / "run.log").read_text()


def test_second_signal_exits_at_once(tmp_path: Path, listener: Listener) -> None:
    """A second SIGTERM does not wait for the running generation."""
    proc, url = _start(tmp_path, listener)
    try:
        listener.wait_for("READY=1")
        outcome: list[object] = []

        def generate() -> None:
            try:
                outcome.append(
                    httpx.post(
                        f"{url}/v1/completions",
                        json={"prompt": "Count:", "max_tokens": 1500, "logit_bias": NO_EOS},
                        timeout=120,
                    )
                )
            except httpx.HTTPError as exc:  # the process is gone: that is the point
                outcome.append(exc)

        worker = threading.Thread(target=generate)
        worker.start()
        while not httpx.get(f"{url}/health").json().get("running", {}).get("smollm2"):
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) != 0
        worker.join(timeout=30)
        assert isinstance(outcome[0], httpx.HTTPError)  # it did not wait for the generation
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_sighup_reloads_manifests(tmp_path: Path, listener: Listener, demo_path: Path) -> None:
    """SIGHUP re-reads model manifests without restarting."""
    proc, url = _start(tmp_path, listener)
    try:
        listener.wait_for("READY=1")
        before = {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}
        write_model(tmp_path / "models", "fresh", demo_path)
        proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            after = {m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]}
            if "fresh" in after:
                break
            time.sleep(0.05)
        assert "fresh" not in before and "fresh" in after
        assert proc.poll() is None  # still running
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_doctor_reports_each_check(tmp_path: Path) -> None:
    """Each check is a line with OK or the fix; a broken model makes the exit status 1."""
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"nope")
    write_model(tmp_path / "models", "junk", junk)
    cfg = tmp_path / "personad.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[server]\nport = {free_port()}\n'
        f'[models]\ndir = "{tmp_path / "models"}"\n'
        '[run]\nbridges = ["discord"]\npersonas = ["demo"]\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "doctor", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path), "COLUMNS": "300"},
    )
    assert proc.returncode == 1
    text = proc.stdout
    assert "OK  config: valid" in text
    assert "OK  llama.cpp: llama-cpp-python 0.3.36" in text
    assert "OK  model smollm2: readable" in text
    assert "FIX model junk:" in text and "not a GGUF file" in text
    assert "OK  port: 127.0.0.1:" in text
    assert "FIX discord token for demo: missing → a credential file" in text
    assert "OK  data directory" in text
    assert "FIX service: no personad unit installed → personad service install" in text


def test_system_unit_uses_system_paths(tmp_path: Path) -> None:
    """--system --print names /var/lib/personad and /etc/personad, never the caller's home,
    and every unit makes the files it creates owner-only."""
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / ".config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        # The unit starts the installed `personad` script.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    unit = subprocess.run(
        [sys.executable, "-m", "daemon", "service", "install", "--system", "--print"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert unit.returncode == 0, unit.stderr
    text = unit.stdout
    assert str(tmp_path) not in text
    assert "User=personad" in text and "UMask=0077" in text
    assert "ReadWritePaths=-/var/lib/personad -/var/cache/personad" in text
    assert "Environment=PERSONAD_CONFIG=/etc/personad/personad.toml" in text
    _verify(text, tmp_path, "system")
    assert "UMask=0077" in render_unit(SPEC, "user")


def test_doctor_counts_a_time_wait_port_as_free(tmp_path: Path) -> None:
    """A port held only by a TIME-WAIT connection of a stopped daemon is free to the next
    daemon (it binds with SO_REUSEADDR, as uvicorn does), so doctor says it is free."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemon's has
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end of the port goes to TIME-WAIT
    client.close()
    listener.close()
    plain = socket.socket()
    with pytest.raises(OSError):  # the situation doctor used to misreport
        plain.bind(("127.0.0.1", port))
    plain.close()
    cfg = tmp_path / "personad.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[server]\nport = {port}\n'
        f'[models]\ndir = "{tmp_path / "models"}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "doctor", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path), "COLUMNS": "300"},
    )
    assert f"OK  port: 127.0.0.1:{port} is free" in proc.stdout, proc.stdout


def test_doctor_reports_a_port_in_use(tmp_path: Path) -> None:
    """A port another socket listens on is reported with the fix."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "personad.toml"
        cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n[server]\nport = {port}\n')
        proc = subprocess.run(
            [sys.executable, "-m", "daemon", "doctor", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HOME": str(tmp_path), "COLUMNS": "300"},
        )
    assert f"FIX port: cannot listen on 127.0.0.1:{port}" in proc.stdout, proc.stdout
    assert "set server.port" in proc.stdout
