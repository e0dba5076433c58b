"""Logs are JSON lines off a terminal, readable on one, and never contain a secret."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog

from daemon._logging import REDACTED, configure_logging
from tests.conftest import free_port

SECRET = "tok-9f8e7d6c5b4a"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger back as it was after a test configures logging."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_json_lines_off_a_terminal(restore_logging: None) -> None:
    """Each event is one JSON object with its key/value data."""
    buf = io.StringIO()
    configure_logging(stream=buf)
    structlog.get_logger("t").info("model_loaded", model="m", seconds=1.5)
    logging.getLogger("uvicorn.error").info("from the stdlib")
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert lines[0]["event"] == "model_loaded" and lines[0]["model"] == "m"
    assert lines[0]["level"] == "info" and "timestamp" in lines[0]
    assert lines[1]["event"] == "from the stdlib"


def test_console_format_is_readable(restore_logging: None) -> None:
    """The console renderer writes key=value text, not JSON."""
    buf = io.StringIO()
    configure_logging(stream=buf, fmt="console")
    structlog.get_logger("t").info("model_loaded", model="m")
    line = buf.getvalue()
    assert "model_loaded" in line and "model=m" in line and not line.startswith("{")


def test_secrets_are_redacted_everywhere(restore_logging: None) -> None:
    """A secret is masked in values, nested data, messages and tracebacks."""
    buf = io.StringIO()
    configure_logging(stream=buf, secrets=[SECRET])
    log = structlog.get_logger("t")
    log.info("auth", header=f"Bearer {SECRET}", nested={"k": [SECRET]})
    try:
        raise ValueError(f"bad token {SECRET}")
    except ValueError:
        log.exception("failed")
    logging.getLogger("other").warning("token=%s", SECRET)
    text = buf.getvalue()
    assert SECRET not in text
    assert text.count(REDACTED) >= 4


def test_serve_never_logs_the_api_key(tmp_path: Path) -> None:
    """A real daemon at debug level, used with right and wrong keys, never prints the key."""
    port = free_port()
    env = {
        **os.environ,
        "PERSONAD_SERVER__API_KEY": SECRET,
        "PERSONAD_LOG__LEVEL": "debug",
        "PERSONAD_MODELS__DIR": str(tmp_path),
        "PERSONAD_MODELS__INCLUDE_DEMO": "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        good = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {SECRET}"})
        bad = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {SECRET}x"})
        assert (good.status_code, bad.status_code) == (200, 401)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert "request_failed" in output  # the 401 was logged...
    assert SECRET not in output  # ...without the key
