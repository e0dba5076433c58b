"""Start-up through ``daemon.serve``: one bind check everywhere, failed preloads, stop signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.errors import UnsafeBindError
from tests.conftest import free_port, make_settings, serve, write_model

PY = sys.executable


def _config(tmp_path: Path, extra: str = "", port: int | None = None) -> Path:
    cfg = tmp_path / "personad.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f"[server]\nport = {port or free_port()}\n"
        f'[models]\ndir = "{tmp_path / "models"}"\n'
        f'[run]\nbridges = []\npersonas_dir = "{tmp_path / "personas"}"\n{extra}'
    )
    return cfg


def _personad(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "400", **(env or {})},
    )


def _error_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def _persona(tmp_path: Path, name: str, model: str) -> None:
    (tmp_path / "personas").mkdir(exist_ok=True)
    (tmp_path / "personas" / f"{name}.toml").write_text(
        f'name = "{name}"\nmodel = "{model}"\n[card]\ndescription = "Someone."\n'
    )


def test_run_refuses_public_bind_without_key(tmp_path: Path) -> None:
    """`personad run` on 0.0.0.0 without an API key exits 2 naming the fix, like serve."""
    proc = _personad(
        "run", "--config", str(_config(tmp_path)), env={"PERSONAD_SERVER__HOST": "0.0.0.0"}
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = _error_line(proc.stderr)
    assert "refusing to bind 0.0.0.0 without an API key" in line
    assert "server.api_key" in line


def test_test_helper_refuses_public_bind_without_key(tmp_path: Path) -> None:
    """The tests' own daemon helper starts through the same check."""
    settings = make_settings(tmp_path, server={"host": "0.0.0.0"})
    with pytest.raises(UnsafeBindError), serve(settings):
        pass


def test_run_with_a_key_may_bind_beyond_loopback(tmp_path: Path) -> None:
    """With an API key set, the check lets a non-loopback address through."""
    settings = make_settings(tmp_path, server={"host": "0.0.0.0", "api_key": "k-12345678"})
    with serve(settings) as running:
        assert httpx.get(f"{running.url}/health", timeout=10).status_code == 200


def test_serve_with_an_unknown_preload_exits(tmp_path: Path) -> None:
    """`serve -p nobody` exits non-zero within 30 s with one line naming the model and fix."""
    started = time.monotonic()
    proc = _personad("serve", "-p", "nobody", "--config", str(_config(tmp_path)), timeout=30)
    assert time.monotonic() - started < 30
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = _error_line(proc.stderr)
    assert "model 'nobody' could not be loaded at start-up" in line
    assert "personad models list" in line


def test_serve_with_a_broken_preload_exits(tmp_path: Path) -> None:
    """A preloaded model whose file is not a model ends start-up with its name and reason."""
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x00" * 100)
    write_model(tmp_path / "models", "junk", junk)
    proc = _personad("serve", "-p", "junk", "--config", str(_config(tmp_path)), timeout=30)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = _error_line(proc.stderr)
    assert "model 'junk' could not be loaded at start-up" in line and "junk.gguf" in line


def test_run_with_a_persona_on_an_unknown_model_exits(tmp_path: Path) -> None:
    """A persona whose model does not exist ends `run` within 30 s, naming the model."""
    _persona(tmp_path, "ghost", "nobody")
    cfg = _config(tmp_path, 'personas = ["ghost"]\n')
    proc = _personad("run", "--config", str(cfg), timeout=30)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "model 'nobody' could not be loaded at start-up" in _error_line(proc.stderr)


def test_unknown_persona_is_a_configuration_error(tmp_path: Path) -> None:
    """An unknown persona says so (not "unknown model") and exits 2."""
    proc = _personad("run", "--config", str(_config(tmp_path, 'personas = ["nobody"]\n')))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = _error_line(proc.stderr)
    assert "unknown persona 'nobody'" in line and "run.personas" in line
    assert "unknown model" not in line


@pytest.fixture
def stalled_model(tmp_path: Path) -> Iterator[str]:
    """A model whose file never finishes arriving: loading it blocks until the test ends."""
    fifo = tmp_path / "stalled.gguf"
    os.mkfifo(fifo)
    # Holding the write end open, writing nothing, keeps the loader waiting for the header.
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    write_model(tmp_path / "models", "stalled", fifo)
    yield "stalled"
    os.close(writer)


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    log = (tmp_path / "out.log").open("w")
    proc = subprocess.Popen(
        [PY, "-m", "daemon", *args, "--config", str(_config(tmp_path, port=port))],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def _wait_health(url: str, proc: subprocess.Popen[Any], want: str) -> None:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        assert proc.poll() is None, "the daemon ended early"
        try:
            if httpx.get(f"{url}/health", timeout=5).json().get("status") == want:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"/health never said {want!r}")


def _stopped_within(proc: subprocess.Popen[Any], seconds: float) -> int:
    started = time.monotonic()
    try:
        code = proc.wait(timeout=seconds)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - started < seconds
    return code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_loading_ends_it(
    tmp_path: Path, stalled_model: str, sig: signal.Signals
) -> None:
    """SIGTERM or Ctrl-C while a preload is still loading ends the process within 10 s."""
    proc, url = _start(tmp_path, "serve", "-p", stalled_model)
    _wait_health(url, proc, "loading")
    proc.send_signal(sig)
    assert _stopped_within(proc, 10) == 0


def test_a_stop_signal_while_idle_ends_it(tmp_path: Path) -> None:
    """SIGTERM to an idle `personad serve` ends it within 10 s with status 0."""
    proc, url = _start(tmp_path, "serve")
    _wait_health(url, proc, "ok")
    proc.send_signal(signal.SIGTERM)
    assert _stopped_within(proc, 10) == 0


def test_run_stops_while_loading(tmp_path: Path, stalled_model: str) -> None:
    """`personad run` honours the first SIGTERM while its persona's model is loading."""
    _persona(tmp_path, "slow", stalled_model)
    port = free_port()
    cfg = _config(tmp_path, 'personas = ["slow"]\n', port=port)
    proc = subprocess.Popen(
        [PY, "-m", "daemon", "run", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_health(f"http://127.0.0.1:{port}", proc, "loading")
    proc.send_signal(signal.SIGTERM)
    assert _stopped_within(proc, 10) == 0
