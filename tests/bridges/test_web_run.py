"""`personad run --bridge web`: the demo persona on the web page, as a new user first tries it."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import httpx
import pexpect
from websockets.sync.client import connect

from tests.bridges.web_site import robin_on_the_web
from tests.conftest import free_port


def test_run_bridge_web_prints_the_url_and_robin_answers(tmp_path: Path) -> None:
    """`--bridge web` replaces the console, prints the page's URL, and Robin (the real demo
    model) answers a visitor there."""
    # Greedy sampling: the same (non-empty) reply every run, never a lucky sample.
    manifest = robin_on_the_web(tmp_path / "personas")
    manifest.write_text(manifest.read_text().replace("temperature = 0.7", "temperature = 0"))
    cfg = tmp_path / "personad.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[server]\nport = {free_port()}\n'
        f'[models]\ndir = "{tmp_path / "models"}"\n'
        f'[run]\npersonas_dir = "{tmp_path / "personas"}"\nseed = 1\n'
        "start_time = 2026-03-02T19:00:00Z\n"
    )
    child = pexpect.spawn(
        sys.executable,
        ["-m", "daemon", "run", "--bridge", "web", "--config", str(cfg)],
        encoding="utf-8",
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        child.expect(r"chat with Robin at (http://\S+)")
        url = child.match.group(1)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/chat/robin/", url)
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "<title>Robin" in page.text
        origin = url.split("/chat/")[0]
        with connect(url.replace("http://", "ws://") + "ws", origin=origin) as ws:
            ws.send(json.dumps({"type": "hello", "name": "Alex"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
            ws.send(json.dumps({"type": "say", "text": "hi Robin! how are you?"}))
            while True:
                try:
                    frame = json.loads(ws.recv(timeout=60))
                except TimeoutError:
                    child.expect(pexpect.TIMEOUT, timeout=1)
                    raise AssertionError(child.before) from None
                if frame["type"] == "message" and frame["mine"]:
                    break
        assert frame["author"] == "Robin" and frame["text"].strip()
        child.kill(15)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0 or child.signalstatus is None
