"""End to end: `personad run` with the console bridge, driven in a pseudo-terminal."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pexpect

from tests.conftest import Running, free_port


def _config(tmp_path: Path) -> Path:
    # The shipped demo persona, made deterministic: greedy sampling gives the same reply
    # every run, so the test never depends on a lucky sample.
    from models import demo_persona

    shipped = demo_persona().source
    assert shipped is not None
    (tmp_path / "personas").mkdir(exist_ok=True)
    (tmp_path / "personas" / "demo.toml").write_text(
        shipped.read_text().replace("temperature = 0.7", "temperature = 0")
    )
    cfg = tmp_path / "personad.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f"[server]\nport = {free_port()}\n"
        f'[models]\ndir = "{tmp_path / "models"}"\n'
        f'[run]\npersonas_dir = "{tmp_path / "personas"}"\nseed = 1\n'
        # Robin's day depends on the hour: the clock starts on a Monday evening, whenever
        # the test runs.
        "start_time = 2026-03-02T19:00:00Z\n"
    )
    return cfg


def test_console_conversation_with_a_gap(tmp_path: Path) -> None:
    """A message gets a reply from the real model; after /wait 3h a new conversation starts."""
    cfg = _config(tmp_path)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "daemon", "run", "--config", str(cfg)],
        encoding="utf-8",
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        child.expect("chatting with Robin")
        child.sendline("hi Robin, how was your hike?")
        child.expect("a new conversation begins")
        child.expect("Robin is typing")
        child.expect(r"Robin: (\S.*)\r\n")
        first = child.match.group(1)
        assert first.strip()
        child.sendline("/wait 3h")
        child.expect(r"\(3h pass\)")
        child.sendline("Robin, are you still there?")
        child.expect("a new conversation begins")
        child.expect(r"Robin: (\S.*)\r\n")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    db = sqlite3.connect(tmp_path / "data" / "personad.db")
    rows = db.execute("SELECT author_name, text FROM messages ORDER BY ts").fetchall()
    db.close()
    assert [r[0] for r in rows] == ["Alex", "Robin", "Alex", "Robin"]
    assert (tmp_path / "data" / "personad.log").read_text().count("session_started") == 2
    # The log and the conversation store are the user's alone.
    for path, mode in (("", 0o700), ("personad.log", 0o600), ("personad.db", 0o600)):
        assert stat.S_IMODE((tmp_path / "data" / path).stat().st_mode) == mode, path


def test_wait_shows_robins_day(tmp_path: Path) -> None:
    """`/wait` in a real `personad run` shows Robin going to sleep, coming back to answer what
    was said at night, and starting a conversation of its own."""
    cfg = _config(tmp_path)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "daemon", "run", "--config", str(cfg)],
        encoding="utf-8",
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        child.expect("chatting with Robin")
        child.sendline("/wait 4h")
        child.expect(r"-- 23:00 Robin went offline \(asleep\)")
        child.sendline("Robin, you still up?")
        child.expect(r"-- Robin is asleep until 07:00; /wait 8h")
        child.sendline("/wait 8h")
        child.expect(r"-- 07:00 Robin is back")
        child.expect(r"Robin: \S")  # what was said at night is answered on waking
        child.sendline("/wait 24h")
        child.expect(r"-- \d\d:\d\d Robin started a conversation")
        child.expect(r"Robin: \S")
        child.sendline("/when")
        child.expect(r"-- \w{3} \d\d:\d\d Robin goes to sleep")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    lines = (tmp_path / "data" / "personad.log").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    presence = [(e["state"], e["reason"]) for e in events if e["event"] == "presence"]
    assert ("offline", "asleep") in presence and ("online", "awake") in presence
    assert any(e["event"] == "conversation_started" for e in events)


def test_forget_deletes_one_persons_messages(tmp_path: Path) -> None:
    """personad forget --user ID removes that person's rows and nothing else."""
    from bridges import Store, StoredMessage
    from bridges.testing import FakeClock

    cfg = _config(tmp_path)
    store = Store(tmp_path / "data" / "personad.db")
    robin = store.for_persona("Robin")
    now = FakeClock().now()
    for author in ("u1", "u2", "u1"):
        robin.add(
            StoredMessage(
                "fake",
                "c",
                f"{author}-{len(robin.since(now.replace(year=2000)))}",
                author,
                author,
                False,
                False,
                "message",
                "hi",
                now,
            ),
        )
    store.close()
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "forget", "--user", "u1", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "forgot 2" in proc.stdout
    store = Store(tmp_path / "data" / "personad.db")
    assert [m.author_id for m in store.for_persona("Robin").recent("fake", "c", 10)] == ["u2"]
    store.close()


def test_run_against_another_server(tmp_path: Path, shared_daemon: Running) -> None:
    """With run.daemon_url set, no daemon is started here: bridges use that server."""
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text() + f'daemon_url = "{shared_daemon.url}"\n')
    child = pexpect.spawn(
        sys.executable, ["-m", "daemon", "run", "--config", str(cfg)], encoding="utf-8", timeout=120
    )
    try:
        child.expect("chatting with Robin")
        child.sendline("Robin, say something")
        child.expect(r"Robin: \S")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert "Uvicorn running" not in (tmp_path / "data" / "personad.log").read_text()
