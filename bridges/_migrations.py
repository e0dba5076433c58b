"""The state database's schema versions, kept in ``PRAGMA user_version``.

Version 0 is a database written by personad 0.1.0 (or a new, empty file). Each migration
takes the schema one version up inside one transaction, so a failed step leaves the previous
version intact; before the first step a copy of the file is made next to it
(``personad.db.bak-v0``, readable by its owner only). A database of a version newer than
:data:`CURRENT` is refused: this code does not know what it would destroy.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from .errors import StoreTooNew

__all__ = ["CURRENT", "migrate"]

log = structlog.get_logger("personad.store")

# The 0.1.0 schema: version 0.
_BASE = """
CREATE TABLE IF NOT EXISTS messages (
    persona TEXT NOT NULL,
    bridge TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL,
    author_id TEXT NOT NULL,
    author_name TEXT NOT NULL,
    is_bot INTEGER NOT NULL,
    is_self INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    reply_to TEXT,
    addressed INTEGER NOT NULL DEFAULT 0,
    opener INTEGER NOT NULL DEFAULT 0,
    ts REAL NOT NULL,
    PRIMARY KEY (persona, bridge, channel, message_id, kind, author_id)
);
CREATE INDEX IF NOT EXISTS messages_by_channel ON messages (persona, bridge, channel, ts);
CREATE INDEX IF NOT EXISTS messages_by_author ON messages (author_id);
CREATE TABLE IF NOT EXISTS state (
    persona TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (persona, key)
);
"""


def _1_handled(db: sqlite3.Connection) -> None:
    """`handled` marks the messages the persona has decided on (answered or let pass).

    Rows of an older database count as handled: nothing from before the upgrade is answered
    out of the blue.
    """
    columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    if "handled" not in columns:  # a 0.1.x database patched by an earlier pre-release
        db.execute("ALTER TABLE messages ADD COLUMN handled INTEGER NOT NULL DEFAULT 1")
    db.execute("CREATE INDEX IF NOT EXISTS messages_pending ON messages (persona) WHERE handled=0")


def _2_typed_state(db: sqlite3.Connection) -> None:
    """One typed state document per persona (``bridges.persona.PersonaState``) replaces the
    loose keys of the ``state`` table; every 0.1.0 key is carried over."""
    db.execute(
        "CREATE TABLE persona_state (persona TEXT PRIMARY KEY NOT NULL, state TEXT NOT NULL)"
    )
    old: dict[str, dict[str, Any]] = {}
    for persona, key, value in db.execute("SELECT persona, key, value FROM state"):
        old.setdefault(str(persona), {})[str(key)] = json.loads(value)
    for persona, keys in old.items():
        state = _from_0_1_0(keys)
        unknown = sorted(set(keys) - _KNOWN_0_1_0)
        if unknown:
            log.warning("state_keys_dropped", persona=persona, keys=unknown)
        db.execute(
            "INSERT INTO persona_state (persona, state) VALUES (?, ?)",
            (persona, json.dumps(state)),
        )
    db.execute("DROP TABLE state")


_KNOWN_0_1_0 = {"online", "presence_shown", "away", "next_start", "starts", "channel_names"}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _from_0_1_0(keys: dict[str, Any]) -> dict[str, Any]:
    """The state document (``PersonaState``'s JSON form) of 0.1.0's keys."""
    state: dict[str, Any] = {}
    for key in ("online", "presence_shown"):
        if keys.get(key) is not None:
            state[key] = bool(keys[key])
    if keys.get("away"):
        start, end = keys["away"]
        state["away"] = {"start": _iso(start), "end": _iso(end)}
    if keys.get("next_start") is not None:
        state["next_start"] = _iso(keys["next_start"])
    for day, count in (keys.get("starts") or {}).items():
        state["starts_day"], state["starts_count"] = day, int(count)
    if keys.get("channel_names"):
        state["channel_names"] = {str(k): str(v) for k, v in keys["channel_names"].items()}
    return state


_STEPS: list[Callable[[sqlite3.Connection], None]] = [_1_handled, _2_typed_state]
CURRENT = len(_STEPS)


def _backup(db: sqlite3.Connection, path: Path, version: int) -> Path:
    """A consistent copy of the database, beside it, readable by its owner only."""
    target = path.with_name(f"{path.name}.bak-v{version}")
    n = 1
    while target.exists():  # never overwrite an earlier backup
        n += 1
        target = path.with_name(f"{path.name}.bak-v{version}.{n}")
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    copy = sqlite3.connect(target)
    try:
        db.backup(copy)
    finally:
        copy.close()
    return target


def migrate(db: sqlite3.Connection, path: Path) -> int:
    """Bring the database at ``path`` to :data:`CURRENT`; return the version found."""
    found = int(db.execute("PRAGMA user_version").fetchone()[0])
    if found > CURRENT:
        raise StoreTooNew(path, found, CURRENT)
    if found == CURRENT:
        return found
    fresh = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    if not fresh:
        backup = _backup(db, path, found)
        log.info("store_backed_up", path=str(path), backup=str(backup), version=found)
    db.executescript(_BASE)
    for version in range(found + 1, CURRENT + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another process (a `pause` during the first `run`) may have migrated meanwhile:
            # read the version again under the write lock.
            if int(db.execute("PRAGMA user_version").fetchone()[0]) >= version:
                db.execute("COMMIT")
                continue
            _STEPS[version - 1](db)
            db.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if not fresh:
            log.info("store_migrated", path=str(path), version=version)
    return found
