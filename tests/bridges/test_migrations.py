"""The state database's schema versions: a 0.1.0 file migrates in place, nothing lost, with
a backup made first; a file from a newer personad is refused."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from bridges import Store, StoreTooNew
from bridges._migrations import migrate
from bridges.persona import StateBook

FIXTURE = Path(__file__).parent / "fixtures" / "store-0.1.0.db"


def _copy(tmp_path: Path) -> Path:
    path = tmp_path / "personad.db"
    shutil.copyfile(FIXTURE, path)
    return path


def _version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_a_0_1_0_database_migrates_in_place_and_nothing_is_lost(tmp_path: Path) -> None:
    """Messages, the away plan, the next start and channel names of both personas survive;
    old history is not pending; a 0600 backup of the original sits beside it."""
    path = _copy(tmp_path)
    store = Store(path)
    assert store.personas() == ["Robin", "Sam"]
    for name, said in (("Robin", "hey both!"), ("Sam", "yo")):
        view = store.for_persona(name)
        texts = [(m.kind, m.text) for m in view.recent("fake", "general", 10)]
        assert texts == [
            ("message", "morning all"),
            ("reply", "hiya"),
            ("message", "look"),
            ("photo", "a dog on a beach"),
            ("message", said),
        ]
        assert view.pending() == {}
        state = StateBook(view).state
        assert state.away is not None
        assert state.away.start == datetime.fromtimestamp(1772486609.602542, UTC)
        assert state.away.end == datetime.fromtimestamp(1772487933.678577, UTC)
        assert state.next_start == datetime.fromtimestamp(1772498267.810701, UTC)
        assert state.channel_names == {"general": "general"}
        assert state.presence_shown and state.online
    store.close()
    backup = tmp_path / "personad.db.bak-v0"
    assert _version(backup) == 0
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert _version(path) == 2
    # Opening it again migrates nothing and makes no second backup.
    Store(path).close()
    assert sorted(p.name for p in tmp_path.iterdir() if ".bak" in p.name) == [backup.name]


def test_0_1_0_start_counts_carry_over() -> None:
    """The `starts` key of 0.1.0 ({day: count}) becomes the typed day and count."""
    from bridges._migrations import _from_0_1_0

    state = _from_0_1_0({"starts": {"2026-03-02": 2}, "online": False})
    assert state == {"starts_day": "2026-03-02", "starts_count": 2, "online": False}
    from bridges.persona import PersonaState

    assert PersonaState.model_validate(state).starts_on(date(2026, 3, 2)) == 2


def test_a_database_from_a_newer_personad_is_refused(tmp_path: Path) -> None:
    """user_version above what this code knows: a clear error naming the file, untouched."""
    path = tmp_path / "personad.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreTooNew, match=r"personad.db was written by a newer personad"):
        Store(path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.bak*"))


def test_a_new_database_needs_no_backup(tmp_path: Path) -> None:
    """A fresh file is created at the current version without a backup."""
    Store(tmp_path / "personad.db").close()
    assert _version(tmp_path / "personad.db") == 2
    assert not list(tmp_path.glob("*.bak*"))


class _StaleVersion(sqlite3.Connection):
    """A connection that read the schema version just before another process migrated."""

    stale = True

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "PRAGMA user_version" and self.stale:
            self.stale = False
            return super().execute("SELECT 0")
        return super().execute(sql, *args)


def test_a_migration_done_meanwhile_by_another_process_is_not_run_twice(tmp_path: Path) -> None:
    """The version is read again under the write lock, so a racing opener skips the steps."""
    path = tmp_path / "personad.db"
    shutil.copy(FIXTURE, path)
    Store(path).close()  # the other process migrates first
    db = sqlite3.connect(path, isolation_level=None, factory=_StaleVersion)
    try:
        migrate(db, path)  # believes it found version 0
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 10
    finally:
        db.close()


def test_a_store_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """The directory is created 0700 and the database 0600 even under umask 022."""
    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "data" / "personad.db")
        store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    for name in os.listdir(tmp_path / "data"):
        assert stat.S_IMODE((tmp_path / "data" / name).stat().st_mode) == 0o600, name
