"""`personad forget --user`: the person's messages and the model states holding them go."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from bridges import Store, StoredMessage

from ..conftest import free_port
from ..daemon.test_client import _kv_file


def _said(store: Store, persona: str, channel: str, author: str, mid: str) -> None:
    store.for_persona(persona).add(
        StoredMessage(
            bridge="discord",
            channel=channel,
            message_id=mid,
            author_id=author,
            author_name=author,
            is_bot=False,
            is_self=False,
            kind="message",
            text=f"{author} was here",
            ts=datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
        ),
    )


def test_forget_user_drops_their_conversations_states_with_the_daemon_stopped(
    tmp_path: Path,
) -> None:
    """KV files of each conversation the person spoke in are deleted; others stay."""
    data = tmp_path / "data"
    store = Store(data / "personad.db")
    _said(store, "Robin", "1", "u-bob", "m1")
    _said(store, "Sam", "2", "u-bob", "m2")
    _said(store, "Robin", "3", "u-alex", "m3")
    store.close()
    kv = data / "kv"
    bobs = [_kv_file(kv, "Robin/discord/1"), _kv_file(kv, "Sam/discord/2")]
    alexs = _kv_file(kv, "Robin/discord/3")
    config = tmp_path / "personad.toml"
    config.write_text(
        f'data_dir = "{data}"\n[models]\ndir = "{tmp_path / "models"}"\n'
        f"[server]\nport = {free_port()}\n"  # nothing listens: the daemon is stopped
    )
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "forget", "--user", "u-bob", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "forgot 2 messages" in proc.stdout
    assert "dropped 2 cached model states of 2 conversations" in proc.stdout
    assert not any(p.exists() for p in bobs) and alexs.exists()
    store = Store(data / "personad.db")
    assert [m.author_id for m in store.for_persona("Robin").recent("discord", "3", 5)] == ["u-alex"]
    assert store.for_persona("Robin").recent("discord", "1", 5) == []
    store.close()


def _forget(config: Path, user: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "forget", "--user", user, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_a_daemon_that_refuses_the_drop_stops_forget_before_anything_is_deleted(
    tmp_path: Path,
) -> None:
    """A running daemon answering 401 (a wrong key) is an error; the messages stay, so the
    command can be run again once the key is fixed."""
    from daemon.testing import scripted_loader

    from ..conftest import make_settings, serve

    settings = make_settings(tmp_path, server={"api_key": "the-real-key"})
    store = Store(settings.data_dir / "personad.db")
    _said(store, "Robin", "1", "u-bob", "m1")
    store.close()
    with serve(settings, loader=scripted_loader(["x"])) as running:
        port = running.url.rsplit(":", 1)[1]
        config = tmp_path / "personad.toml"
        config.write_text(
            f'data_dir = "{settings.data_dir}"\n[models]\ndir = "{tmp_path / "models"}"\n'
            f'[server]\nport = {port}\napi_key = "a-wrong-key"\n'
        )
        proc = _forget(config, "u-bob")
    assert proc.returncode == 1
    assert "refused" in proc.stderr and "nothing was forgotten" in proc.stderr
    assert "Traceback" not in proc.stderr
    store = Store(settings.data_dir / "personad.db")
    assert store.conversations_of("u-bob")
    store.close()


def test_a_damaged_database_is_a_one_line_error(tmp_path: Path) -> None:
    """A personad.db that is not a database stops forget with exit 2, naming the file."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "personad.db").write_bytes(b"this is not sqlite" * 100)
    config = tmp_path / "personad.toml"
    config.write_text(f'data_dir = "{data}"\n[models]\ndir = "{tmp_path / "models"}"\n')
    proc = _forget(config, "u-bob")
    assert proc.returncode == 2, proc.stderr
    assert "personad.db cannot be read" in proc.stderr and "Traceback" not in proc.stderr
